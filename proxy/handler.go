package proxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/internal/token"
)

// exchange is the state of one proxied request, shared by ServeHTTP and the
// ReverseProxy hooks through the request context.
type exchange struct {
	grant         *Grant
	token         string
	path          string // exactly as received and resolved
	rawQuery      string
	scrub         *scrubber
	rec           *auditRecord
	upstreamStart time.Time
	bodyStalled   atomic.Bool // the client stopped sending the request body
	bodyOverride  atomic.Bool // the request body names a method override
}

type exchangeKey struct{}

func exchangeFrom(r *http.Request) *exchange {
	ex, _ := r.Context().Value(exchangeKey{}).(*exchange)
	return ex
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &auditRecord{
		Time:       start.UTC(),
		RequestID:  newRequestID(),
		Method:     r.Method,
		ClientAddr: r.RemoteAddr,
		Decision:   "denied",
	}
	sw := &statusWriter{ResponseWriter: w}
	var body *countingReader // set once the request is allowed
	w.Header().Set("X-Phantom-Request-Id", rec.RequestID)
	defer func() {
		rec.Status = sw.status
		if body != nil {
			rec.BytesIn = body.n
		}
		rec.BytesOut = sw.n
		rec.DurationMS = float64(time.Since(start).Microseconds()) / 1000
		if err := s.audit.write(rec); err != nil {
			s.log.Error("writing the audit log", "error", err, "request_id", rec.RequestID)
		}
		s.metrics.request(rec.Route, rec.Decision, rec.Status)
	}()
	refuse := func(status int, reason, message string) {
		rec.Reason = reason
		// A refused client keeps no connection: idle keep-alives of
		// clients without a valid token must not fill the listener.
		sw.Header().Set("Connection", "close")
		if r.ContentLength != 0 {
			// The body is never read: answer at once, rather than let the
			// server wait to drain a body that may never come.
			http.NewResponseController(w).SetReadDeadline(time.Now())
		}
		writeError(sw, status, statusType[status], reason, message, rec.RequestID)
	}

	path, rawQuery, err := checkTarget(r)
	if err != nil {
		rec.Path = token.Redact(strings.ToValidUTF8(r.URL.EscapedPath(), "?"))
		if errors.Is(err, errMethod) {
			sw.Header().Set("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
			refuse(http.StatusMethodNotAllowed, resolve.ReasonMethodNotAllowed, err.Error())
			return
		}
		refuse(http.StatusBadRequest, resolve.ReasonBadRequest, err.Error())
		return
	}
	rec.Path = path
	if _, _, ok := token.Find(path); ok {
		// Neither the audit log nor the upstream may see it.
		rec.Path = token.Redact(path)
		refuse(http.StatusBadRequest, resolve.ReasonBadRequest, "a phantom token belongs in a header or a query parameter, never in the path")
		return
	}
	tok, err := s.finder.find(r.Header, rawQuery)
	if err == nil && otherTokenIn(rawQuery, tok) {
		err = errTwoTokens // one the finder does not look at would go upstream
	}
	switch {
	case errors.Is(err, errTwoTokens), errors.Is(err, errBadEncoding):
		refuse(http.StatusBadRequest, resolve.ReasonBadRequest, err.Error())
		return
	case err != nil:
		refuse(http.StatusUnauthorized, resolve.ReasonUnknownToken, err.Error())
		return
	}

	ip := clientIP(r)
	if wait := s.unknownTokens.retryAfter(ip, tok); wait > 0 {
		sw.Header().Set("Retry-After", strconv.Itoa(int(wait.Round(time.Second)/time.Second)+1))
		refuse(http.StatusTooManyRequests, "rate_limited", "too many unknown phantom tokens from this address; retry later")
		return
	}
	resolveStart := time.Now()
	d, err := s.resolver.Resolve(r.Context(), ResolveRequest{Token: tok, Method: r.Method, Path: path, ClientIP: ip})
	if err != nil {
		s.metrics.resolveDone(resolveStart, "error")
		rec.Decision = "error"
		if errors.Is(err, errOverloaded) {
			sw.Header().Set("Retry-After", "1")
			refuse(http.StatusServiceUnavailable, "overloaded", "Phantom is overloaded; retry later")
			return
		}
		s.log.Warn("cannot resolve through Vault", "error", err, "request_id", rec.RequestID)
		refuse(http.StatusServiceUnavailable, "vault_unavailable", "Phantom cannot reach Vault; retry later")
		return
	}
	s.metrics.resolveDone(resolveStart, "ok")
	rec.Route, rec.Accessor = d.Route, d.Accessor
	if !d.Allowed {
		if d.Reason == resolve.ReasonUnknownToken {
			s.unknownTokens.refused(ip)
		}
		status, message := resolve.Refusal(d.Reason)
		refuse(status, d.Reason, message)
		return
	}

	rec.Decision = "allowed"
	s.unknownTokens.resolved(tok)
	if r.ContentLength > s.cfg.MaxBodyBytes {
		refuse(http.StatusRequestEntityTooLarge, "body_too_large", "the request body is too large")
		return
	}
	ex := &exchange{
		grant:    d.Grant,
		token:    tok,
		path:     path,
		rawQuery: rawQuery,
		scrub:    scrubberFor(d.Grant),
		rec:      rec,
	}
	out := r.WithContext(context.WithValue(r.Context(), exchangeKey{}, ex))
	// Only an allowed request's body is read, each read bounded in time.
	var reqBody io.ReadCloser = &stallReader{
		ReadCloser: http.MaxBytesReader(sw, r.Body, s.cfg.MaxBodyBytes),
		rc:         http.NewResponseController(w),
		timeout:    s.cfg.BodyStallTimeout,
		stalled:    &ex.bodyStalled,
	}
	if guarded := overrideGuard(r, reqBody, func() { ex.bodyOverride.Store(true) }); guarded != nil {
		reqBody = guarded
	}
	body = &countingReader{ReadCloser: reqBody}
	out.Body = body
	s.rp.ServeHTTP(sw, out)
}

// newReverseProxy forwards with Rewrite, never Director: hop-by-hop headers
// named by the client are removed before the credential is injected
// (golang/go#50580).
func (s *Server) newReverseProxy(transport http.RoundTripper) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite:   s.rewrite,
		Transport: transport,
		// Zero: ReverseProxy flushes SSE and bodies of unknown length (chunked)
		// at once, and writes a body of known length in one go rather than
		// as separate header, body and trailer writes.
		FlushInterval:  0,
		ModifyResponse: s.modifyResponse,
		BufferPool:     copyBuffers,
		ErrorHandler:   s.proxyError,
		ErrorLog:       s.log.StandardLogger(nil),
	}
}

// copyBuffers spares each response ReverseProxy's own 32 KiB buffer.
var copyBuffers = &bufferPool{pool: sync.Pool{New: func() any { return new([32 << 10]byte) }}}

type bufferPool struct{ pool sync.Pool }

func (p *bufferPool) Get() []byte  { return p.pool.Get().(*[32 << 10]byte)[:] }
func (p *bufferPool) Put(b []byte) { p.pool.Put((*[32 << 10]byte)(b)) }

func (s *Server) rewrite(pr *httputil.ProxyRequest) {
	ex := exchangeFrom(pr.In)
	out, g := pr.Out, ex.grant

	rawQuery := stripToken(out.Header, ex.rawQuery, ex.token)
	removeNeverForwarded(out.Header)
	rawPath := strings.TrimSuffix(g.Upstream.EscapedPath(), "/") + ex.path
	out.URL.Scheme, out.URL.Host = g.Upstream.Scheme, g.Upstream.Host
	out.URL.RawPath = rawPath
	out.URL.Path, _ = url.PathUnescape(rawPath) // valid: checkTarget vetted it
	out.Host = ""
	// Only gzip, which the proxy decodes before scrubbing (readableResponse).
	out.Header.Set("Accept-Encoding", "gzip")

	out.URL.RawQuery = g.inject(out.Header, rawQuery)
	ex.upstreamStart = time.Now()
}

func (s *Server) modifyResponse(resp *http.Response) error {
	ex := exchangeFrom(resp.Request)
	s.metrics.upstreamDone(ex.grant.Route, ex.upstreamStart)
	ex.rec.UpstreamStatus = resp.StatusCode
	if err := readableResponse(resp); err != nil {
		return err
	}
	ex.scrub.Header(resp.Header)
	ex.scrub.Header(resp.Trailer) // names only, for now: ReverseProxy announces them next
	// Trailer values arrive with the end of the body.
	resp.Body = ex.scrub.Reader(resp.Body, resp.ContentLength, func() { ex.scrub.Header(resp.Trailer) })
	return nil
}

func (s *Server) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	ex := exchangeFrom(r)
	status, reason, message := http.StatusBadGateway, "upstream_error", "the upstream could not be reached"
	var netErr net.Error
	switch {
	case errors.As(err, &netErr) && netErr.Timeout(), errors.Is(err, context.DeadlineExceeded):
		status, reason, message = http.StatusGatewayTimeout, "upstream_timeout", "the upstream did not answer in time"
	case errors.Is(err, errEncodedResponse):
		message = "the upstream answered with an encoding Phantom cannot inspect"
	case errors.Is(err, errPartialResponse):
		message = "the upstream answered with partial content (206), which Phantom does not pass on"
	}
	var maxErr *http.MaxBytesError
	switch {
	case errors.As(err, &maxErr):
		status, reason, message = http.StatusRequestEntityTooLarge, "body_too_large", "the request body is too large"
	case ex.bodyOverride.Load():
		status, reason, message = http.StatusBadRequest, "bad_request", "the request body names a method override (_method), which some upstreams run instead of the method resolved"
		w.Header().Set("Connection", "close")
	case ex.bodyStalled.Load():
		status, reason, message = http.StatusRequestTimeout, "body_timeout", "the request body stopped arriving"
		w.Header().Set("Connection", "close")
	}
	ex.rec.Decision, ex.rec.Reason = "error", reason
	// Transport errors quote the upstream URL, which for query injection
	// holds the credential: scrub before logging.
	s.log.Warn("upstream request failed", "route", ex.grant.Route, "accessor", ex.grant.Accessor,
		"request_id", ex.rec.RequestID, "error", ex.scrub.String(err.Error()))
	writeError(w, status, statusType[status], reason, message, ex.rec.RequestID)
}

// clientIP is the TCP peer: never a header a client could forge.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return ""
	}
	return host
}

func newRequestID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// statusWriter records the status and body size sent to the agent. Unwrap
// lets http.ResponseController reach Flush for streaming.
type statusWriter struct {
	http.ResponseWriter
	status int
	n      int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 { // 1xx responses are interim
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.n += int64(n)
	return n, err
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

type countingReader struct {
	io.ReadCloser
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n += int64(n)
	return n, err
}

// stallReader bounds how long one read of a request body may wait for the
// client, so a body announced and never sent cannot hold a connection and
// an upstream request open for ever. When the body ends the deadline is
// lifted, as the connection then waits for the next request; when it is
// abandoned (a stall, an upstream that answered without reading it), the
// connection may read no more, so the server closes it instead of waiting
// to drain the rest.
type stallReader struct {
	io.ReadCloser
	rc      *http.ResponseController
	timeout time.Duration
	stalled *atomic.Bool
	ended   bool
}

func (s *stallReader) Read(p []byte) (int, error) {
	s.rc.SetReadDeadline(time.Now().Add(s.timeout))
	n, err := s.ReadCloser.Read(p)
	switch {
	case err == io.EOF:
		s.ended = true
		s.rc.SetReadDeadline(time.Time{})
	case err != nil:
		if errors.Is(err, os.ErrDeadlineExceeded) {
			s.stalled.Store(true)
		}
		s.rc.SetReadDeadline(time.Now())
	}
	return n, err
}

func (s *stallReader) Close() error {
	if !s.ended {
		s.rc.SetReadDeadline(time.Now())
	}
	return s.ReadCloser.Close()
}
