package proxy

import (
	"context"
	"errors"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/proxy/inject"
)

// reverseProxy forwards one admitted request. Each request gets its own,
// its hooks bound to its exchange: nothing is looked up again from the
// request's context. It forwards with Rewrite, never Director: hop-by-hop
// headers named by the client are removed before the credential is
// injected (golang/go#50580).
func (s *Server) reverseProxy(ex *exchange) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { s.rewrite(pr, ex) },
		Transport: interimScrubber{next: s.upstream, ex: ex},
		// Zero: ReverseProxy flushes SSE and bodies of unknown length (chunked)
		// at once, and writes a body of known length in one go rather than
		// as separate header, body and trailer writes.
		FlushInterval:  0,
		ModifyResponse: func(resp *http.Response) error { return s.modifyResponse(resp, ex) },
		BufferPool:     s.buffers,
		ErrorHandler:   func(w http.ResponseWriter, _ *http.Request, err error) { s.proxyError(w, ex, err) },
		ErrorLog:       s.reverseProxyLog,
	}
}

// withheldDetailLog is ReverseProxy's error log. Its messages quote
// upstream bytes ("malformed MIME header: ...") that may hold the
// credential, and it logs for no request: only the message's own words
// are kept.
func withheldDetailLog(l hclog.Logger) *log.Logger { return log.New(withheldDetail{l}, "", 0) }

// withheldDetail logs a ReverseProxy message up to the first ": " after
// its "httputil: " prefix, which is where Go's own words end and the
// quoted error begins.
type withheldDetail struct{ log hclog.Logger }

func (w withheldDetail) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	rest := strings.TrimPrefix(msg, "httputil: ")
	if i := strings.Index(rest, ": "); i >= 0 {
		msg = msg[:len(msg)-len(rest)+i] + " (detail withheld: it may quote the upstream's bytes)"
	}
	w.log.Warn(msg)
	return len(p), nil
}

// bufferPool spares each response ReverseProxy's own 32 KiB buffer.
type bufferPool struct{ pool sync.Pool }

func newBufferPool() *bufferPool {
	return &bufferPool{pool: sync.Pool{New: func() any { return new([32 << 10]byte) }}}
}

func (p *bufferPool) Get() []byte  { return p.pool.Get().(*[32 << 10]byte)[:] }
func (p *bufferPool) Put(b []byte) { p.pool.Put((*[32 << 10]byte)(b)) }

// rewrite makes the upstream request: the token and the never-forwarded
// headers out (extract.go, upstream_guard.go), the credential in (package inject).
func (s *Server) rewrite(pr *httputil.ProxyRequest, ex *exchange) {
	out, g := pr.Out, ex.grant

	rawQuery := stripToken(out.Header, ex.rawQuery, ex.token)
	removeNeverForwarded(out.Header)
	stripCharsets(out.Header, pr.In.ContentLength == 0) // charset.go
	rawPath := resolve.ForwardPath(g.Upstream, ex.path) // what an hmac route's engine signs
	out.URL.Scheme, out.URL.Host = g.Upstream.Scheme, g.Upstream.Host
	out.URL.RawPath = rawPath
	out.URL.Path, _ = url.PathUnescape(rawPath) // valid: checkTarget vetted it
	out.Host = ""
	// Only gzip, which the proxy decodes before scrubbing (readableResponse).
	out.Header.Set("Accept-Encoding", "gzip")

	out.URL.RawQuery = rawQuery
	// Rewrite cannot fail: a request that cannot be signed fails in the
	// transport, before it is sent (upstream_guard.go).
	ex.injectErr = injectCredential(out, ex.style, g.Headers)
	ex.upstreamStart = time.Now()
}

// injectCredential puts the route's static headers on out, then the
// credential the route's way (package inject), last, since a signature
// covers the headers.
func injectCredential(out *http.Request, style inject.Style, headers map[string]string) error {
	for k, v := range headers {
		out.Header.Set(k, v)
	}
	return style.Apply(out)
}

// modifyResponse makes the upstream's answer readable (upstream_guard.go)
// and scrubs every form of the credential from it (package scrub).
func (s *Server) modifyResponse(resp *http.Response, ex *exchange) error {
	s.metrics.upstreamDone(ex.grant.Route, ex.upstreamStart)
	ex.rec.UpstreamStatus = resp.StatusCode
	if err := readableResponse(resp); err != nil {
		return err
	}
	ex.scrub.Header(resp.Header)
	// The request id is Phantom's to set: none from the upstream, and after
	// a relayed 1xx (whose headers ReverseProxy clears) it is set again.
	resp.Header.Del(requestIDHeader)
	if ex.sawInterim.Load() {
		resp.Header.Set(requestIDHeader, ex.rec.RequestID)
	}
	ex.scrub.Header(resp.Trailer) // names only, for now: ReverseProxy announces them next
	if ex.meter != nil && resp.StatusCode/100 == 2 {
		// Read as it goes to the agent, and on to its end if the agent goes
		// away; an error answer carries no usage and is not charged.
		resp.Body = s.meterUsage(resp, ex) // usage_settle.go
	}
	// Trailer values arrive with the end of the body.
	resp.Body = ex.scrub.Reader(resp.Body, resp.ContentLength, func() { ex.scrub.Header(resp.Trailer) })
	return nil
}

// proxyError answers a forwarded request that failed: the upstream could
// not be reached or answered what Phantom does not pass on, or the agent's
// body was too large, named a method override or stalled.
func (s *Server) proxyError(w http.ResponseWriter, ex *exchange, err error) {
	ref := refusalFor(resolve.ReasonUpstreamError)
	var netErr net.Error
	switch {
	case errors.As(err, &netErr) && netErr.Timeout(), errors.Is(err, context.DeadlineExceeded):
		ref = refusalFor(resolve.ReasonUpstreamTimeout)
	case errors.Is(err, errEncodedResponse):
		ref.message = "the upstream answered with an encoding Phantom cannot inspect"
	case errors.Is(err, errResponseCharset):
		ref.message = "the upstream answered in a charset Phantom cannot inspect (only ASCII-compatible ones pass)"
	case errors.Is(err, errPartialResponse):
		ref.message = "the upstream answered with partial content (206), which Phantom does not pass on"
	}
	if bad := unsignable(err); bad != nil { // the agent's request, not the upstream
		ref = bad
	}
	if body := bodyRefusal(err, ex); body != nil { // limits.go: the agent's body failed, not the upstream
		ref = body
		if body.reason != resolve.ReasonBodyTooLarge {
			w.Header().Set("Connection", "close") // what is left of the body is not read
		}
	}
	ex.rec.Decision = "error"
	// Sent whole and never answered (or answered what is not passed on):
	// the upstream may have spent, unread (usage_settle.go).
	ex.lost = ex.sent.Load()
	// Transport errors quote the upstream URL, which for query injection
	// holds the credential, and what the upstream sent (Scrubber.LogText).
	s.log.Warn("upstream request failed", "route", ex.grant.Route, "accessor", ex.grant.Accessor,
		"request_id", ex.rec.RequestID, "error", ex.scrub.LogText(err.Error()))
	answer(w, ex.rec, ref)
}
