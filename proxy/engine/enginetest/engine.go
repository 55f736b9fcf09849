// Package enginetest is an in-memory Phantom engine for tests of the proxy:
// an engine.Client that answers from the tokens a test gives it, counts the
// calls it gets, and can be made to fail.
package enginetest

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/phantomvault/phantom/internal/origin"
	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/proxy/engine"
)

var _ engine.Client = (*Engine)(nil)

// Engine answers Resolve from its tokens: a token allowed with a grant gets
// it, a token denied gets its answer, any other token unknown_token.
// CheckTunnel allows a token to its grant's origin, and no token to any
// grant's. ReportUsage keeps the reports. It is safe for concurrent use.
type Engine struct {
	mu          sync.Mutex
	grants      map[string]*resolve.Grant // token -> grant
	denials     map[string]resolve.Answer // token -> denial
	pathDenials map[string]string         // path -> reason, for any token
	err         error                     // every call fails with it
	notReady    bool
	delay       time.Duration // before each resolve's answer
	resolves    []resolve.Request
	tunnels     []resolve.TunnelRequest
	reports     []resolve.UsageReport
	reportCalls int
}

// New is an engine that knows no token.
func New() *Engine {
	return &Engine{grants: map[string]*resolve.Grant{}, denials: map[string]resolve.Answer{}, pathDenials: map[string]string{}}
}

// Allow has the engine allow token with a copy of g.
func (e *Engine) Allow(token string, g *resolve.Grant) {
	e.mu.Lock()
	defer e.mu.Unlock()
	cp := *g
	e.grants[token] = &cp
	delete(e.denials, token)
}

// Edit changes the grant of an allowed token.
func (e *Engine) Edit(token string, edit func(*resolve.Grant)) {
	e.mu.Lock()
	defer e.mu.Unlock()
	edit(e.grants[token])
}

// Deny has the engine refuse token for reason, as it refuses a token it
// knows: naming route r and accessor pha_denied.
func (e *Engine) Deny(token, reason string) {
	e.Answer(token, resolve.Answer{Reason: reason, Route: "r", Accessor: "pha_denied"})
}

// DenyPath has the engine refuse every request for path, with reason, as
// it refuses a path outside a token's scope.
func (e *Engine) DenyPath(path, reason string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.pathDenials[path] = reason
}

// Answer has the engine refuse token with a (Allowed is set to false).
func (e *Engine) Answer(token string, a resolve.Answer) {
	e.mu.Lock()
	defer e.mu.Unlock()
	a.Allowed = new(false)
	e.denials[token] = a
	delete(e.grants, token)
}

// Fail makes every call fail with err, as when Vault cannot be reached;
// nil answers again.
func (e *Engine) Fail(err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.err = err
}

// SetReady sets what Ready reports.
func (e *Engine) SetReady(ready bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.notReady = !ready
}

// SetDelay delays each resolve's answer by d.
func (e *Engine) SetDelay(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.delay = d
}

// Resolve decides req from the engine's tokens, and records it.
func (e *Engine) Resolve(_ context.Context, req resolve.Request) (*engine.Decision, error) {
	e.mu.Lock()
	delay := e.delay
	e.mu.Unlock()
	time.Sleep(delay)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.resolves = append(e.resolves, req)
	if e.err != nil {
		return nil, e.err
	}
	if a, ok := e.denials[req.Token]; ok {
		return &engine.Decision{Answer: &a}, nil
	}
	if reason, ok := e.pathDenials[req.Path]; ok {
		return &engine.Decision{Answer: resolve.Deny(reason, "")}, nil
	}
	g, ok := e.grants[req.Token]
	if !ok {
		return &engine.Decision{Answer: resolve.Deny(resolve.ReasonUnknownToken, "")}, nil
	}
	cp := *g
	return &engine.Decision{Answer: &resolve.Answer{Allowed: new(true), Route: g.Route, Accessor: g.Accessor}, Grant: &cp}, nil
}

// Ready reports what SetReady set (true at first).
func (e *Engine) Ready(context.Context) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return !e.notReady
}

// CheckTunnel decides a CONNECT from the grants' upstreams, and records it.
func (e *Engine) CheckTunnel(_ context.Context, req resolve.TunnelRequest) (*resolve.TunnelAnswer, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.tunnels = append(e.tunnels, req)
	if e.err != nil {
		return nil, e.err
	}
	deny := func(reason string) (*resolve.TunnelAnswer, error) {
		return &resolve.TunnelAnswer{Allowed: new(false), Reason: reason}, nil
	}
	leadsThere := func(g *resolve.Grant) bool {
		o, err := origin.OfURL(g.Upstream)
		return err == nil && o.String() == req.Origin
	}
	if req.Token == "" {
		for _, g := range e.grants {
			if leadsThere(g) {
				return &resolve.TunnelAnswer{Allowed: new(true)}, nil
			}
		}
		return deny(resolve.ReasonOriginNotAllowed)
	}
	if a, ok := e.denials[req.Token]; ok {
		return deny(a.Reason)
	}
	g, ok := e.grants[req.Token]
	switch {
	case !ok:
		return deny(resolve.ReasonUnknownToken)
	case !leadsThere(g):
		return deny(resolve.ReasonOriginNotAllowed)
	}
	return &resolve.TunnelAnswer{Allowed: new(true), Route: g.Route, Accessor: g.Accessor}, nil
}

// ReportUsage keeps reports, unless the engine fails.
func (e *Engine) ReportUsage(_ context.Context, reports []resolve.UsageReport) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.reportCalls++
	if e.err != nil {
		return e.err
	}
	e.reports = append(e.reports, reports...)
	return nil
}

// Resolves are the requests resolved so far, failed ones included.
func (e *Engine) Resolves() []resolve.Request {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.resolves)
}

// Tunnels are the CONNECTs checked so far, failed ones included.
func (e *Engine) Tunnels() []resolve.TunnelRequest {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.tunnels)
}

// Reported sums the usage reported for accessor, settlements included.
func (e *Engine) Reported(accessor string) resolve.UsageReport {
	e.mu.Lock()
	defer e.mu.Unlock()
	sum := resolve.UsageReport{Accessor: accessor}
	for _, r := range e.reports {
		if r.Accessor == accessor {
			sum.InputTokens += r.InputTokens
			sum.OutputTokens += r.OutputTokens
			sum.Estimated += r.Estimated
			sum.Settled += r.Settled
		}
	}
	return sum
}

// Reports are the usage reports taken so far.
func (e *Engine) Reports() []resolve.UsageReport {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.reports)
}

// ReportCalls counts the ReportUsage calls, failed ones included.
func (e *Engine) ReportCalls() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.reportCalls
}

// ForgetCalls forgets the calls recorded so far (for benchmarks).
func (e *Engine) ForgetCalls() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.resolves, e.tunnels, e.reports, e.reportCalls = nil, nil, nil, 0
}
