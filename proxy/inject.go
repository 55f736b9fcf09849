package proxy

import (
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"net/url"
	"strings"

	"github.com/phantomvault/phantom/internal/reqpath"
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
		rawQuery = reqpath.DropQueryParams(rawQuery, func(key, _ string) bool { return key == g.AuthName })
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
//
// Forms of a string that holds the credential as it is (the injected value
// "Bearer <key>") are dependent: every occurrence of one holds an
// occurrence of a form of the credential (a byte-wise encoding holds the
// credential's encoding, a base64 one one of the credential's middles), so
// they are looked for only around what the credential's forms found. Near-
// misses of the key then cost one check, not one per string holding it.
func (g *Grant) secretForms() []secretForm {
	value := g.authValue()
	forms := []secretForm{{text: g.Credential, kind: formText}}
	type source struct {
		s         string
		dependent bool
	}
	encoded := []source{{g.Credential, false}}
	add := func(s string, text bool) {
		dep := strings.Contains(s, g.Credential)
		encoded = append(encoded, source{s, dep})
		if text {
			forms = append(forms, secretForm{text: s, kind: formText, dependent: dep})
		}
	}
	add(value, true)
	switch g.AuthType {
	case resolve.AuthQuery:
		// Its '%' may be escaped again (a URL inside a redirect's query),
		// its '+' by a JSON encoder.
		add(url.QueryEscape(value), true)
	case resolve.AuthBasic:
		// Padding carries no bit of the value.
		add(base64.RawStdEncoding.EncodeToString([]byte(value)), false)
	}
	for _, src := range encoded {
		var derived []secretForm
		h := hex.EncodeToString([]byte(src.s))
		derived = append(derived, secretForm{text: h, kind: formText}, secretForm{text: strings.ToUpper(h), kind: formText})
		derived = append(derived, byteListForms(src.s)...)
		derived = append(derived, unicodeForms(src.s)...)
		for _, m := range base64Middles(src.s) {
			derived = append(derived, secretForm{text: m, kind: formBase64})
		}
		for _, f := range derived {
			f.dependent = src.dependent
			forms = append(forms, f)
		}
	}
	return forms
}
