package resolve

import (
	"net/netip"

	"github.com/phantomvault/phantom/internal/reqpath"
	"github.com/phantomvault/phantom/internal/token"
)

// Check validates r as the engine receives it, before any storage is read.
// It returns the client's address (invalid when the proxy sent none), or a
// deny reason and a message for humans.
func (r *Request) Check() (clientIP netip.Addr, reason, message string) {
	switch {
	case r.Token == "":
		return netip.Addr{}, ReasonBadRequest, "token is required"
	case !ValidMethod(r.Method):
		return netip.Addr{}, ReasonBadRequest, "method must be an upper-case HTTP method"
	}
	if err := reqpath.Validate(r.Path); err != nil {
		return netip.Addr{}, ReasonBadRequest, "path " + err.Error()
	}
	if r.ClientIP != "" {
		addr, err := netip.ParseAddr(r.ClientIP)
		if err != nil {
			return netip.Addr{}, ReasonBadRequest, "client_ip is not an IP address"
		}
		clientIP = addr.Unmap()
	}
	if token.Check(r.Token) != nil {
		return netip.Addr{}, ReasonUnknownToken, "not a valid phantom token"
	}
	return clientIP, "", ""
}
