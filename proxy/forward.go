package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/phantomvault/phantom/internal/origin"
	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/internal/token"
	"github.com/phantomvault/phantom/internal/ttlcache"
	"golang.org/x/net/netutil"
)

// The forward-proxy mode: agents set HTTPS_PROXY to the forward listener and
// send CONNECT host:port. The proxy asks the engine first (admitTunnel,
// forward_tunnel.go): a CONNECT with a token is accepted only to the origin
// of that live token's route, one without only to an origin some route
// names; anything else is refused before any byte goes out. It then
// answers the CONNECT itself, terminates TLS with a leaf certificate its CA
// (forward_ca.go) signs for that host, and serves the requests inside the
// tunnel with the same pipeline (Server.serve), exactly as on the reverse-proxy listener,
// with two rules more (admit): the request's Host must be the tunnel's, and
// the resolved grant's upstream must be the tunnel's origin. No byte goes
// to any upstream before both hold, so a tunnel is never blind: it reaches
// only the origin of a route whose token resolved, for that very request.

// reasonOriginNotAllowed refuses a request whose origin is not its
// tunnel's, or not its route's (the engine refuses a CONNECT with it too).
const reasonOriginNotAllowed = resolve.ReasonOriginNotAllowed

// parseConnectTarget reads a CONNECT target (host:port) strictly, into the
// form the engine compares (internal/origin).
func parseConnectTarget(authority string) (origin.Origin, error) { return origin.Parse(authority) }

// tunnel is one CONNECT tunnel, handed to the pipeline with each request
// inside it.
type tunnel struct {
	origin    origin.Origin
	token     string // from Proxy-Authorization; empty when the CONNECT had none
	connectID string // the CONNECT's audit request_id, named by each request inside
}

// tunnelKey carries a tunnel from its connection (ConnContext) to the
// inner server's handler, which hands it to the pipeline.
type tunnelKey struct{}

// serveInTunnel serves a request that came through a tunnel. The methods
// below take a nil tunnel (the reverse-proxy listener) and change nothing.
func (f *forwardProxy) serveInTunnel(w http.ResponseWriter, r *http.Request) {
	t, _ := r.Context().Value(tunnelKey{}).(*tunnel)
	if t == nil {
		// Only tunnel connections reach the inner server.
		f.s.refuse(w, r, &auditRecord{RequestID: newRequestID()}, refusalFor(resolve.ReasonBadRequest))
		return
	}
	f.s.serve(w, r, t)
}

// checkHost refuses a request whose Host is not its tunnel's: a client may
// not open a tunnel to one origin and address another inside it.
func (t *tunnel) checkHost(r *http.Request) *refusal {
	if t == nil {
		return nil
	}
	h := r.Host
	if !strings.Contains(h, ":") || strings.HasSuffix(h, "]") {
		h += ":443"
	}
	if o, err := parseConnectTarget(h); err != nil || o != t.origin {
		return refusalWith(resolve.ReasonOriginNotAllowed, "the request's Host is not the host and port of its CONNECT tunnel")
	}
	return nil
}

// tokenFor is the request's token in a tunnel: the CONNECT's proxy credentials
// stand in for a request that carries none, and a request may not carry
// another.
func (t *tunnel) tokenFor(tok string, err error) (string, error) {
	switch {
	case t == nil || t.token == "":
		return tok, err
	case errors.Is(err, errNoToken):
		return t.token, nil
	case err == nil && tok != t.token:
		return "", errTwoTokens
	}
	return tok, err
}

// checkOrigin refuses a grant whose upstream is not the tunnel's origin,
// before anything is sent. The route's upstream must be the bare origin:
// in a tunnel the client sends the origin's own paths, so the path resolved
// is the path forwarded, with no base path added (which would widen or
// shift what the token's allowed_paths cover).
func (t *tunnel) checkOrigin(g *Grant) *refusal {
	if t == nil {
		return nil
	}
	o, err := origin.OfURL(g.Upstream)
	if err != nil && !errors.Is(err, origin.ErrBasePath) || o != t.origin {
		return refusalWith(resolve.ReasonOriginNotAllowed, "the token's route does not send requests to this tunnel's host and port (https only)")
	}
	if err != nil {
		return refusalWith(resolve.ReasonOriginNotAllowed, "the token's route has an upstream with a base path, which forward-proxy mode does not serve: use the reverse-proxy listener, or a route whose upstream is the bare origin")
	}
	return nil
}

// proxyAuthToken reads a phantom token from Proxy-Authorization: Basic with
// the token as user or password (HTTPS_PROXY=http://x:<token>@host:port),
// or Bearer. No header is no token; a header without a valid token is an
// error.
func proxyAuthToken(h http.Header) (string, error) {
	values := h.Values("Proxy-Authorization")
	if len(values) == 0 {
		return "", nil
	}
	if len(values) > 1 {
		return "", errTwoTokens
	}
	scheme, rest, _ := strings.Cut(strings.TrimSpace(values[0]), " ")
	rest = strings.TrimSpace(rest)
	switch {
	case strings.EqualFold(scheme, "Basic"):
		raw, err := base64.StdEncoding.DecodeString(rest)
		if err != nil {
			return "", errBadToken
		}
		user, pass, _ := strings.Cut(string(raw), ":")
		userOK, passOK := token.Check(user) == nil, token.Check(pass) == nil
		switch {
		case userOK && passOK && user != pass:
			return "", errTwoTokens
		case userOK:
			return user, nil
		case passOK:
			return pass, nil
		}
	case strings.EqualFold(scheme, "Bearer"):
		if token.Check(rest) == nil {
			return rest, nil
		}
	}
	return "", errBadToken
}

// forwardProxy is the forward listener: an http.Server that answers CONNECT
// and hands each tunnel, once TLS is up, to a second http.Server (inner) that
// serves the requests inside tunnels with the same pipeline (serveInTunnel).
type forwardProxy struct {
	s       *Server
	outer   *http.Server
	inner   *http.Server
	tunnels *tunnelListener
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
	f := &forwardProxy{s: s, tunnels: newTunnelListener(ln.Addr()), pending: map[net.Conn]struct{}{},
		refusedOrigins: ttlcache.New[string, struct{}](maxRefusedOrigins, refusedOriginAge)}
	f.outer = s.httpServer(http.HandlerFunc(f.connect))
	f.inner = s.httpServer(http.HandlerFunc(f.serveInTunnel))
	// HTTP/1.1 only: h2 is declined in ALPN, and an empty TLSNextProto keeps
	// the server from ever switching.
	f.inner.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	f.inner.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		if tc, ok := c.(*tunnelConn); ok {
			return context.WithValue(ctx, tunnelKey{}, tc.tunnel)
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
	target, err := parseConnectTarget(r.RequestURI)
	if err != nil {
		refuse(refusalWith(resolve.ReasonBadRequest, err.Error()))
		return
	}
	rec.Path = target.String()
	tok, err := proxyAuthToken(r.Header)
	if err != nil {
		ref := refusalWith(resolve.ReasonUnknownToken, "the proxy credentials are not a phantom token: use HTTPS_PROXY=http://phantom:<token>@host:port, or none and the token in each request")
		ref.status = http.StatusProxyAuthRequired // the 401 of the proxy hop
		refuse(ref)
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
	f.open(&bufferedConn{Conn: conn, r: brw.Reader}, &tunnel{origin: target, token: tok, connectID: rec.RequestID}, *rec)
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

// tlsRecordHandshake is the first byte of a TLS ClientHello.
const tlsRecordHandshake = 0x16

// plainHTTPInTunnel answers a client that sent plain HTTP inside a CONNECT.
const plainHTTPInTunnel = "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n" +
	"Phantom's forward proxy speaks TLS inside CONNECT tunnels, and this client sent plain HTTP. " +
	"Send https:// URLs through HTTPS_PROXY, or use the reverse-proxy listener for http://.\n"

// open terminates TLS on a CONNECT's connection and hands it to the inner
// server, or closes it: a client that sends plain HTTP gets a clear 400, one
// whose SNI names another host a failed handshake.
func (f *forwardProxy) open(conn *bufferedConn, tun *tunnel, rec auditRecord) {
	s := f.s
	conn.SetReadDeadline(time.Now().Add(DefaultReadHeaderTimeout))
	first, err := conn.r.Peek(1)
	if err != nil {
		conn.Close()
		return
	}
	if first[0] != tlsRecordHandshake {
		conn.SetWriteDeadline(time.Now().Add(time.Second))
		io.WriteString(conn, plainHTTPInTunnel)
		conn.Close()
		f.refusedInTunnel(rec, http.StatusBadRequest, "plain_http_in_tunnel")
		return
	}
	tc := tls.Server(conn, &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if hello.ServerName != "" && strings.ToLower(hello.ServerName) != tun.origin.Host {
				return nil, fmt.Errorf("the TLS server name is not the CONNECT host")
			}
			return s.forwardCA.leaf(tun.origin.Host)
		},
	})
	conn.SetDeadline(time.Now().Add(DefaultReadHeaderTimeout))
	if err := tc.Handshake(); err != nil {
		// Most often a client that does not trust the CA yet: say so.
		s.log.Info("TLS handshake in a CONNECT tunnel failed (does the client trust the CA at the admin listener's /ca.pem?)",
			"request_id", rec.RequestID, "target", tun.origin.String(), "error", err)
		tc.Close()
		f.refusedInTunnel(rec, 0, resolve.ReasonTLSHandshakeFailed)
		return
	}
	conn.SetDeadline(time.Time{})
	f.tunnels.push(&tunnelConn{Conn: tc, tunnel: tun})
}

// bufferedConn reads first what the server had buffered after the CONNECT.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// tunnelConn is a tunnel's TLS connection, as the inner server accepts it.
type tunnelConn struct {
	net.Conn
	tunnel *tunnel
}

// tunnelListener hands opened tunnels to the inner server.
type tunnelListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newTunnelListener(addr net.Addr) *tunnelListener {
	return &tunnelListener{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *tunnelListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *tunnelListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *tunnelListener) Addr() net.Addr { return l.addr }

// push hands c over, or closes it once the listener is closed.
func (l *tunnelListener) push(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.done:
		c.Close()
	}
}
