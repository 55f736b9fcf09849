package proxy

import (
	"net/http"

	"github.com/phantomvault/phantom/internal/origin"
	"github.com/phantomvault/phantom/internal/resolve"
)

// admitTunnel asks the engine, before a CONNECT is answered, whether a
// tunnel to target may be opened (TunnelChecker): with proxy credentials
// (tok), only to the origin of that live token's route; without, only to an
// origin some route names. A refused CONNECT sends no byte anywhere. It
// fills rec as it learns.
func (f *forwardProxy) admitTunnel(r *http.Request, rec *auditRecord, target origin.Origin, tok string) *refusal {
	s := f.s
	ip := clientIP(r)
	if tok != "" {
		if ref := s.limitUnknownTokens(ip, tok); ref != nil {
			return ref
		}
	}
	a, err := s.tunnels.CheckTunnel(r.Context(), resolve.TunnelRequest{Origin: target.String(), Token: tok, ClientIP: ip})
	if err != nil {
		rec.Decision = "error"
		s.log.Warn("cannot check a CONNECT through Vault", "error", err, "request_id", rec.RequestID)
		return &refusal{status: http.StatusServiceUnavailable, reason: "vault_unavailable", message: "Phantom cannot reach Vault; retry later"}
	}
	rec.Route, rec.Accessor = a.Route, a.Accessor
	if *a.Allowed {
		if tok != "" {
			s.unknownTokens.resolved(tok)
		}
		return nil
	}
	if a.Reason == resolve.ReasonUnknownToken && tok != "" {
		s.unknownTokens.refused(ip)
	}
	status, message := resolve.Refusal(a.Reason)
	switch {
	case status == http.StatusUnauthorized:
		// The proxy credentials are a dead token: 407 names them, so
		// curl, git and requests report a proxy authentication failure
		// (git also drops stored proxy credentials) rather than a 401 the
		// tunnel never reached.
		status = http.StatusProxyAuthRequired
	case a.Reason == resolve.ReasonOriginNotAllowed && tok != "":
		message = "the phantom token's route does not lead to this host and port (https, no base path): CONNECT to the route's own origin"
	}
	return &refusal{status: status, reason: a.Reason, message: message}
}
