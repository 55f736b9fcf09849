package proxy

import (
	"errors"
	"net/http"
	"time"

	"github.com/phantomvault/phantom/internal/origin"
	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/proxy/engine"
)

// Remembered refusals of CONNECTs without a token (refusedOrigins): such an
// answer depends on the origin alone (does some route lead there?), so one
// refusal answers the next CONNECTs to that origin, from any client, without
// a call to Vault, for refusedOriginAge. Only refusals are remembered, never
// an allowed origin: a route created for an origin serves CONNECTs to it at
// most refusedOriginAge later, and a route deleted stops them at once.
const (
	refusedOriginAge  = 3 * time.Second
	maxRefusedOrigins = 4096
)

// admitTunnel asks the engine, before a CONNECT is answered, whether a
// tunnel to target may be opened (engine.TunnelChecker): with proxy
// credentials (tok), only to the origin of that live token's route;
// without, only to an origin some route names. A refused CONNECT sends no
// byte anywhere. It fills rec as it learns.
//
// No client can make it call Vault without bound (unknownTokenLimit.take):
// a CONNECT without a token, or with one the engine has not allowed lately,
// takes a unit of its address's budget before the call, kept unless the
// engine allows it (or the token is live), so a burst of them costs Vault at
// most the budget's burst, then its rate; a refused origin is remembered
// briefly; and every call shares -vault-concurrency and its queue with the
// resolves (batcher.checkTunnel).
func (f *forwardProxy) admitTunnel(r *http.Request, rec *auditRecord, target origin.Origin, tok string) *refusal {
	s := f.s
	ip := clientIP(r)
	key := target.String()
	if tok == "" && f.refusedOrigins.Contains(key) {
		return refusalFor(resolve.ReasonOriginNotAllowed)
	}
	// Each CONNECT no live token vouches for takes its own unit (a tunnel
	// check is not shared as a fresh token's requests are: charge).
	tk, giveBack := keyOf(tok), func() {}
	if dead, ok := s.unknownTokens.deadAgain(tk); ok {
		rec.Route, rec.Accessor = dead.route, dead.accessor
		return proxyAuthRefusal(refusalFor(dead.reason))
	}
	if !s.unknownTokens.recentlyAllowed(tk) {
		wait, back := s.unknownTokens.take(ip)
		if wait > 0 {
			return unvouched(wait, "too many CONNECTs from this address that no live phantom token vouches for; retry later")
		}
		giveBack = back
	}
	a, err := s.tunnels.CheckTunnel(r.Context(), resolve.TunnelRequest{Origin: key, Token: tok, ClientIP: ip})
	if err != nil {
		rec.Decision = "error"
		if errors.Is(err, engine.ErrOverloaded) {
			giveBack() // never sent
			ref := refusalFor(resolve.ReasonOverloaded)
			ref.retryAfter = "1"
			return ref
		}
		s.log.Warn("cannot check a CONNECT through Vault", "error", err, "request_id", rec.RequestID)
		return refusalFor(resolve.ReasonVaultUnavailable)
	}
	rec.Route, rec.Accessor = a.Route, a.Accessor
	if *a.Allowed {
		if tok != "" {
			giveBack()
			s.unknownTokens.resolved(tk)
		}
		// A CONNECT without a token keeps its unit even when some route
		// names the origin: no credential vouches for it, and each one
		// costs Vault a call.
		return nil
	}
	ref := refusalFor(a.Reason)
	switch {
	case tok == "":
		// Kept: no credential at all. Remembered when it is the origin's
		// alone to answer.
		if a.Reason == resolve.ReasonOriginNotAllowed {
			f.refusedOrigins.Add(key, struct{}{})
		}
	case unusable(ref):
		// Kept: the token is unknown, dead, or not for this address: no
		// credential either, and it passes the limit no more from here.
		s.unknownTokens.died(tk, a.Reason, a.Route, a.Accessor)
	default:
		giveBack() // a live token, out of its scope here
	}
	if a.Reason == resolve.ReasonOriginNotAllowed && tok != "" {
		ref.message = "the phantom token's route does not lead to this host and port (https, no base path): CONNECT to the route's own origin"
	}
	return proxyAuthRefusal(ref)
}

// proxyAuthRefusal answers a CONNECT whose proxy credentials are not a
// usable token with 407, not 401: curl, git and requests then report a
// proxy authentication failure (git also drops stored proxy credentials)
// rather than a 401 the tunnel never reached.
func proxyAuthRefusal(ref *refusal) *refusal {
	if ref.status == http.StatusUnauthorized {
		ref.status = http.StatusProxyAuthRequired
	}
	return ref
}
