package proxy

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/internal/token"
	"github.com/phantomvault/phantom/proxy/engine"
	"github.com/phantomvault/phantom/proxy/forward"
	"github.com/phantomvault/phantom/proxy/inject"
	"github.com/phantomvault/phantom/proxy/scrub"
)

// exchange is the state of one admitted request, handed to each stage after
// the decision: the limits, the request's own ReverseProxy and its hooks
// (reverse_proxy.go), the settlement.
type exchange struct {
	grant         *Grant
	style         inject.Style // how the credential goes on the wire
	injectErr     error        // the style could not put it there: nothing is sent
	token         string
	path          string // exactly as received and resolved
	rawQuery      string
	scrub         *scrub.Scrubber
	rec           *auditRecord
	upstreamStart time.Time
	bodyStalled   atomic.Bool // the client stopped sending the request body
	bodyOverride  atomic.Bool // the request body names a method override
	sawInterim    atomic.Bool // a 1xx was relayed, which clears the agent's response headers
	meter         *meter      // set when the response's LLM usage is charged (limits.go)
	held          *heldBody   // a limited body read into memory (limits_body.go)
	meterState                // charging and settling under LLM limits (usage_settle.go)
}

// requestIDHeader carries the audit record's request id to the agent.
const requestIDHeader = "X-Phantom-Request-Id"

// ServeHTTP serves a request on the reverse-proxy listener.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.serve(w, r, nil) }

// serve takes a request through the pipeline, each stage handing the next
// what it found:
//
//	admit (target, token, client) -> decide (the engine's decision)
//	-> limits (check the body, plan metering) -> forward (inject, scrub)
//	-> settle -> audit
//
// A refusal at any stage is answered in one place (refuse). tun is the
// forward-proxy tunnel the request came through, nil on the reverse-proxy
// listener.
func (s *Server) serve(w http.ResponseWriter, r *http.Request, tun *forward.Tunnel) {
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
	w.Header().Set(requestIDHeader, rec.RequestID)
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

	adm, ref := s.admit(r, tun, rec)
	defer adm.releaseSignedBody() // hmac.go
	var g *Grant
	if ref == nil {
		g, ref = s.decide(sw, r, rec, adm)
	}
	var ex *exchange
	if ref == nil {
		ex, ref = s.begin(adm, g, tun, rec)
	}
	if ref != nil {
		s.refuse(sw, r, rec, ref)
		return
	}
	body = s.requestBody(sw, r, ex)
	out := r.WithContext(r.Context()) // a shallow copy, to carry the admitted body
	out.Body = body
	if ex.grant.Limits != nil {
		// Whatever happens from here on, what the request spent is charged
		// and, under a budget, the request settled: once (usage_settle.go).
		defer s.settle(ex)
		defer ex.releaseHeldBody()
		if ref := applyLimits(out, ex, s.limitedBodies); ref != nil { // limits.go
			rec.Decision = "denied"
			s.refuse(sw, r, rec, ref)
			return
		}
		if ex.meter != nil {
			ctx, done := detachUpstream(out.Context(), ex) // usage_settle.go
			defer done()
			out = out.WithContext(ctx)
		}
	}
	s.reverseProxy(ex).ServeHTTP(sw, out) // reverse_proxy.go
}

// admission is what admit found of a request the engine is to decide on.
type admission struct {
	path     string // exactly as received: what is resolved is what is forwarded
	rawQuery string
	token    string
	aws      awsSigned // what an AWS SDK signed (aws.go)
	key      tokenKey  // the token's digest, for the unknown-token limit
	clientIP string
	// settleCharge settles the unit of the unknown-token limit charged for
	// the resolve: given back (true) or kept.
	settleCharge func(giveBack bool)
	releaseBody  func() // a body read into memory: signed (hmac.go), or an AWS form's action read (aws.go)
}

// admit runs every check a request must pass before the engine is asked,
// in order, and returns the first refusal. It fills rec as it learns.
func (s *Server) admit(r *http.Request, tun *forward.Tunnel, rec *auditRecord) (*admission, *refusal) {
	path, rawQuery, ref := s.checkPath(r, rec)
	if ref != nil {
		return nil, ref
	}
	if tun != nil {
		rec.Tunnel = tun.ConnectID
	}
	if err := tun.CheckHost(r.Host); err != nil {
		return nil, refusalWith(resolve.ReasonOriginNotAllowed, err.Error())
	}
	if err := checkBodyShape(r); err != nil {
		return nil, refusalWith(resolve.ReasonBadRequest, err.Error())
	}
	tok, ref := s.findToken(r, tun, rawQuery)
	if ref != nil {
		return nil, ref
	}
	aws, ref := awsAction(r, path, rawQuery, time.Now())
	if ref != nil {
		return nil, ref
	}
	ip, key := clientIP(r), keyOf(tok)
	if dead, ok := s.unknownTokens.deadAgain(key); ok {
		// Dead for good: the engine's answer again, without asking.
		rec.Route, rec.Accessor = dead.route, dead.accessor
		return nil, refusalFor(dead.reason)
	}
	// Charged before the resolve, unless the engine allowed the token
	// lately: a burst of forged tokens sent at once is held to the burst,
	// not counted only as Vault's answers come back.
	wait, settle := s.unknownTokens.charge(ip, key)
	if wait > 0 {
		return nil, unvouched(wait, "too many unknown phantom tokens from this address; retry later")
	}
	// Before the resolve: a refusal after it would leave the engine holding
	// what it reserved for the request (a budget's share) unsettled.
	if r.ContentLength > s.cfg.MaxBodyBytes {
		settle(true)
		return nil, refusalFor(resolve.ReasonBodyTooLarge)
	}
	return &admission{path: path, rawQuery: rawQuery, token: tok, aws: aws, key: key, clientIP: ip, settleCharge: settle}, nil
}

// decide has the engine decide on an admitted request and settles the
// unit of the unknown-token limit the resolve was charged.
func (s *Server) decide(sw *statusWriter, r *http.Request, rec *auditRecord, adm *admission) (*Grant, *refusal) {
	action, ref := s.formAction(sw, r, adm) // aws.go
	if ref != nil {
		adm.settleCharge(true)
		return nil, ref
	}
	req := resolve.Request{Token: adm.token, Method: r.Method, Path: adm.path, ClientIP: adm.clientIP, Action: action}
	d, ref := s.resolve(r, rec, req)
	if ref != nil && ref.reason == resolve.ReasonHMACInputs && d != nil && d.HMACNeeds != nil {
		d, ref = s.resolveSigned(sw, r, rec, adm, req, d.HMACNeeds) // hmac.go
	}
	// Unknown or dead (a 401), or not for this address: no credential, so
	// its unit stays spent; a token dead for good is answered again without
	// a call. Anything else (a live token out of its scope, or no answer)
	// gives the unit back.
	kept := ref != nil && unusable(ref)
	adm.settleCharge(!kept)
	if ref != nil {
		if kept {
			s.unknownTokens.died(adm.key, ref.reason, rec.Route, rec.Accessor)
		}
		return nil, ref
	}
	s.unknownTokens.resolved(adm.key)
	g := (*Grant)(d.Grant)
	if ref := s.checkCopySource(r, rec, adm, g); ref != nil { // aws.go
		return nil, ref
	}
	if ref := s.checkBatchDelete(sw, r, rec, adm, g); ref != nil { // aws.go
		return nil, ref
	}
	return g, nil
}

// begin makes the exchange of an allowed request, once a tunnel's origin
// is found to be the grant's.
func (s *Server) begin(adm *admission, g *Grant, tun *forward.Tunnel, rec *auditRecord) (*exchange, *refusal) {
	ex := &exchange{grant: g, token: adm.token, path: adm.path, rawQuery: adm.rawQuery, rec: rec}
	// Refused from here, nothing is spent: under limits, only the
	// settlement of what the engine reserved.
	refused := func(ref *refusal) (*exchange, *refusal) {
		if g.Limits != nil {
			s.settle(ex)
		}
		return nil, ref
	}
	style, err := inject.For((*resolve.Grant)(g))
	if err != nil { // a grant resolve checked: only a proxy older than its engine
		s.log.Error("cannot inject the credential", "route", g.Route, "error", err, "request_id", rec.RequestID)
		return refused(refusalFor(resolve.ReasonVaultUnavailable))
	}
	ex.style, ex.scrub = style, s.scrubberFor(g, style) // hmac.go
	if err := tun.CheckOrigin(g.Upstream); err != nil {
		return refused(refusalWith(resolve.ReasonOriginNotAllowed, err.Error()))
	}
	rec.Decision = "allowed"
	return ex, nil
}

// checkPath vets the method and target (target.go) and refuses a phantom
// token in the path, which neither the audit log nor the upstream may see.
func (s *Server) checkPath(r *http.Request, rec *auditRecord) (path, rawQuery string, ref *refusal) {
	path, rawQuery, err := checkTarget(r)
	if err != nil {
		rec.Path = token.Redact(strings.ToValidUTF8(r.URL.EscapedPath(), "?"))
		if errors.Is(err, errMethod) {
			ref := refusalWith(resolve.ReasonMethodNotAllowed, err.Error())
			// 405, not the table's 403: no route can have this method.
			ref.status, ref.allow = http.StatusMethodNotAllowed, "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
			return "", "", ref
		}
		return "", "", refusalWith(resolve.ReasonBadRequest, err.Error())
	}
	rec.Path = path
	if _, _, ok := token.Find(path); ok {
		rec.Path = token.Redact(path)
		return "", "", refusalWith(resolve.ReasonBadRequest, "a phantom token belongs in a header or a query parameter, never in the path")
	}
	return path, rawQuery, nil
}

// findToken finds the one phantom token of the request (extract.go).
func (s *Server) findToken(r *http.Request, tun *forward.Tunnel, rawQuery string) (string, *refusal) {
	tok, err := s.finder.find(r.Header, rawQuery)
	if err == nil && otherTokenIn(rawQuery, tok) {
		err = errTwoTokens // one the finder does not look at would go upstream
	}
	tok, err = tunnelToken(tun, tok, err) // a CONNECT's proxy credentials
	switch {
	case errors.Is(err, errTwoTokens), errors.Is(err, errBadEncoding):
		return "", refusalWith(resolve.ReasonBadRequest, err.Error())
	case errors.Is(err, errNoToken):
		// A challenge, as a git server sends: git (through curl) sends the
		// credentials of its remote URL only once asked for them.
		ref := refusalWith(resolve.ReasonUnknownToken, err.Error())
		ref.challenge = true
		return "", ref
	case err != nil:
		return "", refusalWith(resolve.ReasonUnknownToken, err.Error())
	}
	return tok, nil
}

// resolve asks the engine, through the resolver, whether req may be made.
// Without a decision the proxy fails closed; a denial comes with its
// refusal and the decision (which may ask for an hmac route's inputs).
func (s *Server) resolve(r *http.Request, rec *auditRecord, req resolve.Request) (*engine.Decision, *refusal) {
	resolveStart := time.Now()
	d, err := s.resolver.Resolve(r.Context(), req)
	if err == nil && d.Grant == nil && d.Reason == resolve.ReasonBudgetPending && s.usage.AwaitSettled(r.Context(), d.Accessor) {
		// The budget may be held only by this proxy's settlements of the
		// token's last requests, on their way (metering.UsageReporter):
		// once they are in, ask again (a pending answer spends no rate and
		// no use).
		d, err = s.resolver.Resolve(r.Context(), req)
	}
	if err != nil {
		s.metrics.resolveDone(resolveStart, "error")
		rec.Decision = "error"
		if errors.Is(err, engine.ErrOverloaded) {
			ref := refusalFor(resolve.ReasonOverloaded)
			ref.retryAfter = "1"
			return nil, ref
		}
		s.log.Warn("cannot resolve through Vault", "error", err, "request_id", rec.RequestID)
		return nil, refusalFor(resolve.ReasonVaultUnavailable)
	}
	s.metrics.resolveDone(resolveStart, "ok")
	rec.Route, rec.Accessor = d.Route, d.Accessor
	if d.Grant == nil { // denied
		ref := refusalFor(d.Reason)
		if ref.status == http.StatusTooManyRequests {
			ref.retryAfter, ref.retryAfterMS = retryAfterHeaders(d.RetryAfterMS)
		}
		return d, ref
	}
	return d, nil
}

// retryAfterHeaders are Retry-After (whole seconds, rounded up, at least
// 1) and Retry-After-Ms (exact) for a wait of ms milliseconds.
func retryAfterHeaders(ms int64) (seconds, millis string) {
	if ms <= 0 {
		return "1", ""
	}
	return strconv.FormatInt(max((ms+999)/1000, 1), 10), strconv.FormatInt(ms, 10)
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
