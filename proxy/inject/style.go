// Package inject puts a route's credential on the upstream request, one
// type per auth style, and names the strings that then carry it, so that
// the scrubber masks them (and their encodings) in whatever comes back.
//
// A new style is one new file: a type with Apply and Wires, and its case in
// For. A style the proxy does not know is an error, never a request sent
// without its credential or with it in the wrong place.
package inject

import (
	"fmt"
	"net/http"

	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/proxy/scrub"
)

// A Style is how a route's credential goes on the wire.
type Style interface {
	// Apply puts the credential on out, the request about to go upstream,
	// once every other header is set: a signature covers them. An error
	// means out must not be sent (a *RequestError: the agent's request
	// cannot be signed as it is).
	Apply(out *http.Request) error
	// Wires are the strings that carry the credential as Apply sends it,
	// beyond the credential itself.
	Wires() []scrub.Wire
}

// For returns the style of g's route, holding the value it injects.
func For(g *resolve.Grant) (Style, error) {
	value := g.AuthValue()
	switch g.AuthType {
	case resolve.AuthBearer, resolve.AuthHeader, "": // "": routes older than auth_type, bearer
		return &Header{Name: g.AuthName, Value: value}, nil
	case resolve.AuthBasic:
		return &Basic{Value: value}, nil
	case resolve.AuthQuery:
		return &Query{Name: g.AuthName, Value: value}, nil
	case resolve.AuthAWSSigV4:
		return newSigV4(g)
	case resolve.AuthHMAC:
		return hmacStyle(g)
	}
	return nil, fmt.Errorf("the route's auth_type %q is not one this proxy knows", g.AuthType)
}
