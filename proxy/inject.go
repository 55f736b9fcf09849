package proxy

import (
	"encoding/base64"
	"net/url"
	"strings"
	"time"
)

// Grant is Vault's answer when a token may make a request.
type Grant struct {
	Route      string
	Accessor   string
	Upstream   *url.URL
	Credential string
	AuthType   string // bearer, header, basic or query
	AuthName   string // header or query parameter name
	AuthFormat string // template around {{credential}}
	Headers    map[string]string
	ExpiresAt  time.Time
}

const credentialPlaceholder = "{{credential}}"

// authValue is the credential as the route sends it, before any encoding.
func (g *Grant) authValue() string {
	return strings.ReplaceAll(g.AuthFormat, credentialPlaceholder, g.Credential)
}

// secretForms lists every form of the credential an upstream might echo:
// raw, the injected value, base64, URL-encoded and JSON-escaped.
func (g *Grant) secretForms() []string {
	forms := []string{g.Credential, g.authValue()}
	for _, s := range []string{g.Credential, g.authValue()} {
		forms = append(forms,
			base64.StdEncoding.EncodeToString([]byte(s)),
			base64.RawStdEncoding.EncodeToString([]byte(s)),
			base64.URLEncoding.EncodeToString([]byte(s)),
			base64.RawURLEncoding.EncodeToString([]byte(s)),
			url.QueryEscape(s),
			url.PathEscape(s),
			jsonEscape(s, true),
			jsonEscape(s, false),
		)
	}
	return forms
}
