package proxy

import (
	"encoding/base64"
	"encoding/hex"
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

// secretForms lists the strings an upstream might echo the credential as.
// Text forms are matched with every character other than a letter or digit
// written in any way a mainstream encoder writes it (see scrubforms.go), so
// one form stands for its JSON, percent, form and HTML encodings. Base64
// forms are the characters that only the secret's bytes determine, at each
// of the three alignments the secret can have inside a larger encoded
// document, in both alphabets.
//
// Text forms are the raw credential, the injected value (authValue) and, for
// query injection, the query-escaped value the proxy sends. Base64 and hex
// forms are made of those and, for basic auth, of the base64 the proxy
// sends (an upstream that base64-encodes or hex-dumps the request it
// received).
func (g *Grant) secretForms() []secretForm {
	value := g.authValue()
	forms := []secretForm{{g.Credential, formText}, {value, formText}}
	encoded := []string{g.Credential, value}
	switch g.AuthType {
	case "query":
		// Its '%' may be escaped again (a URL inside a redirect's query),
		// its '+' by a JSON encoder.
		wire := url.QueryEscape(value)
		forms = append(forms, secretForm{wire, formText})
		encoded = append(encoded, wire)
	case "basic":
		// Padding carries no bit of the value.
		encoded = append(encoded, base64.RawStdEncoding.EncodeToString([]byte(value)))
	}
	for _, s := range encoded {
		h := hex.EncodeToString([]byte(s))
		forms = append(forms, secretForm{h, formText}, secretForm{strings.ToUpper(h), formText})
		for _, m := range base64Middles(s) {
			forms = append(forms, secretForm{m, formBase64})
		}
	}
	return forms
}
