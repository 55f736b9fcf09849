package forward

import (
	"errors"
	"net/url"
	"strings"

	"github.com/phantomvault/phantom/internal/origin"
)

// Tunnel is one CONNECT tunnel, handed with each request inside it.
type Tunnel struct {
	Origin    origin.Origin
	Token     string // from Proxy-Authorization; empty when the CONNECT had none
	ConnectID string // the CONNECT's audit request_id, named by each request inside
}

// ParseTarget reads a CONNECT target (host:port) strictly, into the form
// the engine compares.
func ParseTarget(authority string) (origin.Origin, error) { return origin.Parse(authority) }

// CheckHost refuses a request whose Host is not its tunnel's: a client may
// not open a tunnel to one origin and address another inside it. A nil
// tunnel (the reverse-proxy listener) refuses nothing.
func (t *Tunnel) CheckHost(host string) error {
	if t == nil {
		return nil
	}
	if !strings.Contains(host, ":") || strings.HasSuffix(host, "]") {
		host += ":443"
	}
	if o, err := ParseTarget(host); err != nil || o != t.Origin {
		return errors.New("the request's Host is not the host and port of its CONNECT tunnel")
	}
	return nil
}

// CheckOrigin refuses a route's upstream that is not the tunnel's origin,
// before anything is sent. The upstream must be the bare origin: in a
// tunnel the client sends the origin's own paths, so the path resolved is
// the path forwarded, with no base path added (which would widen or shift
// what the token's allowed_paths cover).
func (t *Tunnel) CheckOrigin(upstream *url.URL) error {
	if t == nil {
		return nil
	}
	o, err := origin.OfURL(upstream)
	if err != nil && !errors.Is(err, origin.ErrBasePath) || o != t.Origin {
		return errors.New("the token's route does not send requests to this tunnel's host and port (https only)")
	}
	if err != nil {
		return errors.New("the token's route has an upstream with a base path, which forward-proxy mode does not serve: use the reverse-proxy listener, or a route whose upstream is the bare origin")
	}
	return nil
}
