package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/internal/token"
	"github.com/phantomvault/phantom/internal/ttlcache"
	"github.com/phantomvault/phantom/proxy/forward"
	"golang.org/x/net/netutil"
)

// The forward-proxy mode: agents set HTTPS_PROXY to the forward listener and
// send CONNECT host:port. The proxy asks the engine first (admitTunnel,
// forward_tunnel.go): a CONNECT with a token is accepted only to the origin
// of that live token's route, one without only to an origin some route
// names; anything else is refused before any byte goes out. It then
// answers the CONNECT itself, terminates TLS with a leaf certificate its CA
// (package forward) signs for that host, and serves the requests inside the
// tunnel with the same pipeline (Server.serve) as on the reverse-proxy
// listener, with two rules more (admit): the request's Host must be the tunnel's, and
// the resolved grant's upstream must be the tunnel's origin. No byte goes
// to any upstream before both hold, so a tunnel is never blind: it reaches
// only the origin of a route whose token resolved, for that very request.

// tunnelKey carries a tunnel from its connection (ConnContext) to the
// inner server's handler, which hands it to the pipeline.
type tunnelKey struct{}

// serveInTunnel serves a request that came through a tunnel.
func (f *forwardProxy) serveInTunnel(w http.ResponseWriter, r *http.Request) {
	t, _ := r.Context().Value(tunnelKey{}).(*forward.Tunnel)
	if t == nil {
		// Only tunnel connections reach the inner server.
		f.s.refuse(w, r, &auditRecord{RequestID: newRequestID()}, refusalFor(resolve.ReasonBadRequest))
		return
	}
	f.s.serve(w, r, t)
}

// tunnelToken is the request's token in tunnel t (nil on the reverse-proxy
// listener): the CONNECT's proxy credentials stand in for a request that
// carries none, and a request may not carry another.
func tunnelToken(t *forward.Tunnel, tok string, err error) (string, error) {
	switch {
	case t == nil || t.Token == "":
		return tok, err
	case errors.Is(err, errNoToken):
		return t.Token, nil
	case err == nil && tok != t.Token:
		return "", errTwoTokens
	}
	return tok, err
}

// forwardProxy is the forward listener: an http.Server that answers CONNECT
// and hands each tunnel, once TLS is up, to a second http.Server (inner) that
// serves the requests inside tunnels with the same pipeline (serveInTunnel).
type forwardProxy struct {
	s       *Server
	outer   *http.Server
	inner   *http.Server
	tunnels *forward.Listener
	// refusedOrigins remembers, briefly, origins the engine refused a
	// CONNECT without a token (forward_tunnel.go): refusals only.
	refusedOrigins *ttlcache.Cache[string, struct{}]

	// CONNECTs between hijack and hand-over to inner, which shutdown closes
	// and waits for.
	opening sync.WaitGroup
	mu      sync.Mutex
	pending map[net.Conn]struct{}
	closing bool
}

func (s *Server) newForwardProxy(ln net.Listener) *forwardProxy {
	f := &forwardProxy{s: s, tunnels: forward.NewListener(ln.Addr()), pending: map[net.Conn]struct{}{},
		refusedOrigins: ttlcache.New[string, struct{}](maxRefusedOrigins, refusedOriginAge)}
	f.outer = s.httpServer(http.HandlerFunc(f.connect))
	f.inner = s.httpServer(http.HandlerFunc(f.serveInTunnel))
	// HTTP/1.1 only: h2 is declined in ALPN, and an empty TLSNextProto keeps
	// the server from ever switching.
	f.inner.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	f.inner.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		if t := forward.TunnelOf(c); t != nil {
			return context.WithValue(ctx, tunnelKey{}, t)
		}
		return ctx
	}
	return f
}

// serve runs both servers until shutdown; each result goes to errc.
func (f *forwardProxy) serve(ln net.Listener, errc chan<- error) {
	ln = netutil.LimitListener(limitPerClient(ln, f.s.cfg.MaxConnectionsPerClient), f.s.cfg.MaxConnections)
	go func() { errc <- f.outer.Serve(ln) }()
	go func() { errc <- f.inner.Serve(f.tunnels) }()
}

// shutdown stops taking CONNECTs, waits for the ones being opened, then
// drains the tunnels' requests as the reverse listener drains its own, and
// closes what is left when ctx ends.
func (f *forwardProxy) shutdown(ctx context.Context) error {
	err := f.outer.Shutdown(ctx)
	f.mu.Lock()
	f.closing = true
	for c := range f.pending {
		c.Close()
	}
	f.mu.Unlock()
	opened := make(chan struct{})
	go func() { f.opening.Wait(); close(opened) }()
	select {
	case <-opened:
	case <-ctx.Done():
	}
	if e := f.inner.Shutdown(ctx); e != nil {
		f.inner.Close()
		if err == nil {
			err = e
		}
	}
	return err
}

// connect answers one request on the forward listener: a CONNECT it may
// accept, anything else refused. Each CONNECT gets an audit record.
func (f *forwardProxy) connect(w http.ResponseWriter, r *http.Request) {
	s := f.s
	rec := &auditRecord{Time: time.Now().UTC(), RequestID: newRequestID(), Method: r.Method,
		Path: token.Redact(strings.ToValidUTF8(r.RequestURI, "?")), ClientAddr: r.RemoteAddr, Decision: "denied"}
	done := func(status int) {
		rec.Status = status
		rec.DurationMS = float64(time.Since(rec.Time).Microseconds()) / 1000
		if err := s.audit.write(rec); err != nil {
			s.log.Error("writing the audit log", "error", err, "request_id", rec.RequestID)
		}
		s.metrics.request(rec.Route, rec.Decision, status)
	}
	refuse := func(ref *refusal) {
		s.refuse(w, r, rec, ref)
		done(ref.status)
	}
	if r.Method != http.MethodConnect {
		refuse(refusalWith(resolve.ReasonBadRequest, "this is Phantom's forward-proxy listener: it takes CONNECT only (send https:// URLs through HTTPS_PROXY, or use the reverse-proxy listener with a base URL)"))
		return
	}
	if _, _, ok := token.Find(r.RequestURI); ok {
		// A token pasted as the host: refused before it is folded to lower
		// case, where Redact would no longer know it, and never recorded.
		refuse(refusalWith(resolve.ReasonBadRequest, "the CONNECT target holds a phantom token: put the token in the proxy credentials or the request, never in the host"))
		return
	}
	target, err := forward.ParseTarget(r.RequestURI)
	if err != nil {
		refuse(refusalWith(resolve.ReasonBadRequest, err.Error()))
		return
	}
	rec.Path = target.String()
	tok, err := forward.ProxyCredentials(r.Header)
	if err != nil {
		refuse(proxyAuthRefusal(refusalWith(resolve.ReasonUnknownToken,
			"the proxy credentials are not a phantom token: use HTTPS_PROXY=http://phantom:<token>@host:port, or none and the token in each request")))
		return
	}
	if ref := f.admitTunnel(r, rec, target, tok); ref != nil { // forward_tunnel.go
		refuse(ref)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		s.log.Warn("cannot take over a CONNECT connection", "error", err, "request_id", rec.RequestID)
		done(http.StatusInternalServerError)
		return
	}
	if !f.track(conn) {
		conn.Close()
		done(http.StatusServiceUnavailable)
		return
	}
	defer f.untrack(conn)
	rec.Decision = "allowed"
	// The engine allowed the origin; still no byte goes to it until a
	// request inside the tunnel resolves.
	if _, err := io.WriteString(conn, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		conn.Close()
		done(http.StatusOK)
		return
	}
	done(http.StatusOK)
	f.open(conn, brw.Reader, &forward.Tunnel{Origin: target, Token: tok, ConnectID: rec.RequestID}, *rec)
}

// refusedInTunnel audits a tunnel closed before TLS was up (rec is its
// CONNECT's record).
func (f *forwardProxy) refusedInTunnel(rec auditRecord, status int, reason string) {
	rec.Time, rec.Decision, rec.Reason, rec.Status, rec.DurationMS = time.Now().UTC(), "denied", reason, status, 0
	if err := f.s.audit.write(&rec); err != nil {
		f.s.log.Error("writing the audit log", "error", err, "request_id", rec.RequestID)
	}
	f.s.metrics.request("", "denied", status)
}

// track notes a hijacked CONNECT connection until untrack, unless the
// proxy is shutting down.
func (f *forwardProxy) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closing {
		return false
	}
	f.pending[c] = struct{}{}
	f.opening.Add(1)
	return true
}

func (f *forwardProxy) untrack(c net.Conn) {
	f.mu.Lock()
	delete(f.pending, c)
	f.mu.Unlock()
	f.opening.Done()
}

// open terminates TLS on a CONNECT's connection and hands it to the inner
// server, or audits why it closed (rec is its CONNECT's record).
func (f *forwardProxy) open(conn net.Conn, buffered *bufio.Reader, tun *forward.Tunnel, rec auditRecord) {
	tc, closed := forward.Terminate(conn, buffered, tun, f.s.forwardCA)
	if closed == nil {
		f.tunnels.Push(tc)
		return
	}
	if closed.Reason == resolve.ReasonTLSHandshakeFailed {
		// Most often a client that does not trust the CA yet: say so.
		f.s.log.Info("TLS handshake in a CONNECT tunnel failed (does the client trust the CA at the admin listener's /ca.pem?)",
			"request_id", rec.RequestID, "target", tun.Origin.String(), "error", closed.Err)
	}
	if closed.Reason != "" {
		f.refusedInTunnel(rec, closed.Status, closed.Reason)
	}
}
