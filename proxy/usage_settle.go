package proxy

import (
	"context"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/proxy/metering"
)

// Metering a request under LLM limits once it is forwarded: its answer's
// usage read as it passes (meterUsage), then the request charged what it
// spent, and settled when a budget applies, exactly once, in settle, which
// ServeHTTP defers as soon as the grant is known.

// meterState is what settle learns of an exchange under LLM limits.
type meterState struct {
	endpoint     metering.EndpointKind // what the request calls
	sent         atomic.Bool           // the request reached the upstream whole
	read         *readUsage            // set once a 2xx answer's body is tapped
	lost         bool                  // sent, and no answer came to read (or it was refused)
	stopUpstream func()                // cancels the upstream request
}

// detachUpstream is the context of a metered request's upstream call: not
// cancelled when the agent goes away, so that the answer is still read to
// its end and its usage charged (metering.Tap), but cancelled
// metering.MaxDrainTime after it has gone, and by done. It also notes when
// the request was sent whole.
func detachUpstream(ctx context.Context, ex *exchange) (detached context.Context, done func()) {
	detached, cancel := context.WithCancel(context.WithoutCancel(ctx))
	ex.stopUpstream = cancel
	detached = httptrace.WithClientTrace(detached, &httptrace.ClientTrace{
		WroteRequest: func(i httptrace.WroteRequestInfo) {
			if i.Err == nil {
				ex.sent.Store(true)
			}
		},
	})
	var mu sync.Mutex
	var timer *time.Timer
	unwatch := context.AfterFunc(ctx, func() {
		mu.Lock()
		timer = time.AfterFunc(metering.MaxDrainTime, cancel)
		mu.Unlock()
	})
	return detached, func() {
		unwatch()
		mu.Lock()
		if timer != nil {
			timer.Stop()
		}
		mu.Unlock()
		cancel()
	}
}

// readUsage is what the tap read of a response's usage.
type readUsage struct {
	count metering.Usage
	ended bool // the body was read to its end
	done  bool // the tap was closed
}

// meterUsage wraps a 2xx response's body so that its usage is read as it
// passes, and read on to its end if the agent goes away; ex.read gets what
// was read, for settle.
func (s *Server) meterUsage(resp *http.Response, ex *exchange) io.ReadCloser {
	sse := strings.HasPrefix(strings.ToLower(strings.TrimSpace(resp.Header.Get("Content-Type"))), "text/event-stream")
	ex.read = &readUsage{}
	return metering.NewTap(resp.Body, ex.meter.format, sse, ex.stopUpstream, func(u metering.Usage, ended bool) {
		ex.read.count, ex.read.ended, ex.read.done = u, ended, true
	})
}

// unreadable says why a request's usage was not read (a label of
// phantom_proxy_usage_unreadable_total): unanswered, no answer to read (sent,
// then failed or refused); cut, the body not read to its end; malformed,
// not JSON, or a usage object that could not be read; missing, no final
// usage where the API puts it.
func (r *readUsage) unreadable() string {
	switch {
	case r == nil:
		return "unanswered"
	case !r.done || !r.ended:
		return "cut"
	case r.count.Malformed:
		return "malformed"
	}
	return "missing"
}

// measured reports whether the response's final usage was read: totals
// that the body's end confirmed (Gemini and Anthropic streams carry
// running totals, final only at the end).
func (r *readUsage) measured() bool { return r != nil && r.done && r.ended && r.count.Complete }

// settle charges what one request under LLM limits spent and, when a
// budget applies, closes the engine's reservation for it: called once, as
// ServeHTTP ends, whatever became of the request (refused by the proxy,
// failed upstream, answered with an error, cut, read to its end).
//   - Read: the usage the upstream reported.
//   - Spent but unreadable (a 2xx whose usage could not be read, a stream
//     cut, a request sent and never answered): under a budget, the rest of
//     the budget as the engine handed it down (the token is then spent:
//     fail closed); else the output cap (or what the request asked) and
//     the body's length as input; an embedding only the body's length; a
//     token count nothing.
//   - Not spent (refused, never sent, an error answer): nothing.
//
// The audit record says which: usage "measured", or "unreadable" (also
// counted in phantom_proxy_usage_unreadable_total, with why), whatever was
// charged for it.
func (s *Server) settle(ex *exchange) {
	l, m := ex.grant.Limits, ex.meter
	rep := resolve.UsageReport{Accessor: ex.grant.Accessor}
	if l.BudgetRemaining != nil {
		rep.Settled = 1
	}
	switch {
	case m == nil:
	case ex.read.measured():
		rep.InputTokens, rep.OutputTokens = ex.read.count.Input, ex.read.count.Output
		ex.rec.Usage = "measured"
	case ex.read != nil || ex.lost:
		var u metering.Usage
		if ex.read != nil {
			u = ex.read.count
		}
		if ex.endpoint != metering.EndpointFree {
			// Never a silent zero: whatever is charged below (an estimate,
			// the rest of a budget, or nothing on a route that only counts),
			// the audit record and a counter say the usage was not read.
			ex.rec.Usage = "unreadable"
			s.metrics.usageUnreadable(m.route, ex.read.unreadable())
		}
		s.unmeasured(ex, u, &rep)
	}
	rep.InputTokens = metering.ClampTokens(rep.InputTokens)
	rep.OutputTokens = metering.ClampTokens(rep.OutputTokens)
	if m != nil && rep.InputTokens+rep.OutputTokens > 0 {
		s.metrics.llmUsage(m.route, rep.InputTokens, rep.OutputTokens, rep.Estimated > 0)
	}
	if s.usage != nil && (rep.Settled > 0 || rep.InputTokens+rep.OutputTokens+rep.Estimated > 0) {
		s.usage.Add(rep, l)
	}
}

// unmeasured fills rep for a request that spent what could not be read;
// u is what was read before it stopped.
func (s *Server) unmeasured(ex *exchange, u metering.Usage, rep *resolve.UsageReport) {
	l, m := ex.grant.Limits, ex.meter
	in, out := m.estimateIn, metering.ClampTokens(u.Output)
	if u.HaveInput {
		in = metering.ClampTokens(u.Input)
	}
	switch {
	case ex.endpoint == metering.EndpointFree:
		return
	case l.BudgetRemaining != nil && ex.endpoint != metering.EndpointEmbed:
		rep.InputTokens = in
		rep.OutputTokens = metering.ClampTokens(max(out, m.estimateOut, *l.BudgetRemaining-in))
		s.log.Warn("the LLM usage of a response under a budget could not be read; charging the rest of the token's budget",
			"route", m.route, "accessor", m.accessor, "request_id", ex.rec.RequestID, "charged", rep.InputTokens+rep.OutputTokens)
	case ex.endpoint == metering.EndpointEmbed && m.estimate:
		rep.InputTokens = in
	case m.estimate:
		rep.InputTokens, rep.OutputTokens = in, max(out, m.estimateOut)
	default:
		// Only counted (no budget, no cap, the body unread): an upload's
		// bytes are no estimate of anything.
		s.metrics.usageUnmeasured(m.route)
		return
	}
	rep.Estimated = 1
}
