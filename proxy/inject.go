package proxy

import (
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"net/url"
	"strings"

	"github.com/phantomvault/phantom/internal/resolve"
)

// Grant is the engine's answer when a token may make a request
// (resolve.Grant), with what the proxy does with it: inject the credential
// and know the forms an upstream might echo it in.
type Grant resolve.Grant

// authValue is the credential as the route sends it, before any encoding.
func (g *Grant) authValue() string {
	return (*resolve.Grant)(g).AuthValue()
}

// inject puts the credential where g's route sends it and sets the route's
// static headers on h. It returns the raw query to forward: for query
// injection, any parameter of the same name the client sent is replaced.
func (g *Grant) inject(h http.Header, rawQuery string) string {
	value := g.authValue()
	switch g.AuthType {
	case resolve.AuthQuery:
		rawQuery = removeQueryParams(rawQuery, func(key, _ string) bool { return key == g.AuthName })
		if rawQuery != "" {
			rawQuery += "&"
		}
		rawQuery += url.QueryEscape(g.AuthName) + "=" + url.QueryEscape(value)
	case resolve.AuthBasic:
		h.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(value)))
	default: // bearer and header
		h.Set(g.AuthName, value)
	}
	for k, v := range g.Headers {
		h.Set(k, v)
	}
	return rawQuery
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
	case resolve.AuthQuery:
		// Its '%' may be escaped again (a URL inside a redirect's query),
		// its '+' by a JSON encoder.
		wire := url.QueryEscape(value)
		forms = append(forms, secretForm{wire, formText})
		encoded = append(encoded, wire)
	case resolve.AuthBasic:
		// Padding carries no bit of the value.
		encoded = append(encoded, base64.RawStdEncoding.EncodeToString([]byte(value)))
	}
	for _, s := range encoded {
		h := hex.EncodeToString([]byte(s))
		forms = append(forms, secretForm{h, formText}, secretForm{strings.ToUpper(h), formText})
		forms = append(forms, byteListForms(s)...)
		for _, m := range base64Middles(s) {
			forms = append(forms, secretForm{m, formBase64})
		}
	}
	return forms
}
