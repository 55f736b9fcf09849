package proxy

import (
	"encoding/base64"
	"net/http"
	"net/url"

	"github.com/phantomvault/phantom/internal/reqpath"
	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/proxy/scrub"
)

// Grant is the engine's answer when a token may make a request
// (resolve.Grant), with what the proxy does with it: inject the credential
// and name the strings it travels in, for the scrubber.
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

// wires are the strings that carry the credential upstream, as inject
// writes them: the scrubber masks each, and its encodings.
func (g *Grant) wires() []scrub.Wire {
	value := g.authValue()
	switch g.AuthType {
	case resolve.AuthQuery:
		// Its '%' may be escaped again (a URL inside a redirect's query),
		// its '+' by a JSON encoder; QueryEscape writes a byte in at most 3.
		return []scrub.Wire{{Value: value}, {Value: url.QueryEscape(value), MaxLen: 3 * len(value)}}
	case resolve.AuthBasic:
		// Its encodings only (an upstream may dump the request it got);
		// padding carries no bit of the value.
		b64 := base64.RawStdEncoding.EncodeToString([]byte(value))
		return []scrub.Wire{{Value: value}, {Value: b64, EncodingsOnly: true, MaxLen: (len(value) + 2) / 3 * 4}}
	}
	return []scrub.Wire{{Value: value}} // bearer and header
}
