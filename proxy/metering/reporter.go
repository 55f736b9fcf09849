package metering

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/phantomvault/phantom/internal/resolve"
)

// DefaultReportInterval is how often a UsageReporter reports by default.
const DefaultReportInterval = time.Second

const (
	// usageFlushAt starts a report before the interval is up once this many
	// tokens have usage waiting.
	usageFlushAt = 512
	// maxUsagePending bounds the tokens whose usage waits for Vault. Totals
	// are kept per token, so a Vault that is down for long costs no more
	// memory; only usage of tokens beyond this many is dropped (logged and
	// counted).
	maxUsagePending = 100_000
)

// UsageSink takes usage reports to the engine (the proxy's
// VaultResolver.ReportUsage).
type UsageSink interface {
	ReportUsage(ctx context.Context, reports []resolve.UsageReport) error
}

// ReporterMetrics counts what a UsageReporter could not deliver.
type ReporterMetrics interface {
	UsageReportFailed() // a call to the sink failed; its reports are kept for the next
	UsageDropped()      // a token's usage was dropped
}

// ReporterConfig is how a UsageReporter reports. Metrics and Log are
// required.
type ReporterConfig struct {
	Interval time.Duration // between reports; DefaultReportInterval if zero
	Timeout  time.Duration // bounds each call to the sink; zero: only Run's context does
	Metrics  ReporterMetrics
	Log      hclog.Logger
	// Malformed reports whether the sink refused a batch as malformed,
	// having applied none of it: the batch is dropped, since sending it
	// again would be refused again. Nil: no error is.
	Malformed func(error) bool
}

// UsageReporter adds up the usage measured, per token, and reports it to
// the engine in batches, every interval or sooner once many tokens wait:
// never on a request's path. A report that fails is kept and sent again
// with the next; Run's end sends what is left.
type UsageReporter struct {
	sink      UsageSink
	interval  time.Duration
	timeout   time.Duration
	metrics   ReporterMetrics
	log       hclog.Logger
	malformed func(error) bool

	mu      sync.Mutex
	pending map[string]*resolve.UsageReport // accessor -> totals
	kick    chan struct{}
	// settling counts, per accessor, the settlements in the flush under
	// way; flushed is closed (and replaced) when a flush ends.
	settling map[string]int64
	flushed  chan struct{}
}

// NewUsageReporter reports to sink as c says.
func NewUsageReporter(sink UsageSink, c ReporterConfig) *UsageReporter {
	if c.Interval <= 0 {
		c.Interval = DefaultReportInterval
	}
	return &UsageReporter{
		sink: sink, interval: c.Interval, timeout: c.Timeout, metrics: c.Metrics, log: c.Log, malformed: c.Malformed,
		pending:  map[string]*resolve.UsageReport{},
		kick:     make(chan struct{}, 1),
		settling: map[string]int64{},
		flushed:  make(chan struct{}),
	}
}

// Add records what one request under limits l spent (and, under a budget,
// that it is settled). When reportNow says so, a report starts at once
// (coalesced, never blocking); otherwise it waits for the tick or for
// usageFlushAt tokens.
func (r *UsageReporter) Add(rep resolve.UsageReport, l *resolve.Limits) {
	r.mu.Lock()
	p := r.mergeLocked(rep)
	n := len(r.pending)
	var unreported int64
	if p != nil {
		unreported = p.InputTokens + p.OutputTokens
	}
	r.mu.Unlock()
	if p != nil && (n >= usageFlushAt || reportNow(l, unreported)) {
		select {
		case r.kick <- struct{}{}:
		default:
		}
	}
}

// settleSoonCaps: how close to spent, in output caps left beyond what is
// reserved, a budget must be for its settlements to go at once.
const settleSoonCaps = 64

// reportNow reports whether a token's usage and settlements must go to
// Vault at once rather than with the next tick: under a budget, when it is
// close to spent (the engine holds each unsettled request's cap, and a
// token's next request must find it freed), or when the usage this proxy
// has not reported of the token reaches half of what was left (the engine
// admits requests against the usage it was told of: what is unreported is
// the budget's blind spot, so it is kept small). Far from a budget's end,
// settlements wait for the tick and share its Vault call and storage write.
func reportNow(l *resolve.Limits, unreported int64) bool {
	if l == nil || l.BudgetRemaining == nil {
		return false
	}
	left := *l.BudgetRemaining
	return left <= settleSoonCaps*max(l.MaxOutputTokens, 1) || 2*unreported >= left
}

// mergeLocked adds rep to the pending totals and returns them; nil when it
// had to be dropped.
func (r *UsageReporter) mergeLocked(rep resolve.UsageReport) *resolve.UsageReport {
	p := r.pending[rep.Accessor]
	if p == nil {
		if len(r.pending) >= maxUsagePending {
			r.metrics.UsageDropped()
			r.log.Error("dropping LLM usage: too many tokens wait for Vault to take their usage", "accessor", rep.Accessor,
				"input_tokens", rep.InputTokens, "output_tokens", rep.OutputTokens, "settled", rep.Settled)
			return nil
		}
		p = &resolve.UsageReport{Accessor: rep.Accessor}
		r.pending[rep.Accessor] = p
	}
	p.InputTokens = addTokens(p.InputTokens, rep.InputTokens)
	p.OutputTokens = addTokens(p.OutputTokens, rep.OutputTokens)
	p.Estimated = addTokens(p.Estimated, rep.Estimated)
	p.Settled = addTokens(p.Settled, rep.Settled)
	return p
}

// ClampTokens bounds a count the upstream reported to what the engine
// takes (resolve.MaxReportedTokens): an absurd count is still the most a
// report can charge, and never makes the engine refuse the whole call.
func ClampTokens(n int64) int64 {
	return min(max(n, 0), resolve.MaxReportedTokens)
}

// addTokens adds two counts of a report, saturating at what the engine
// takes: a report above resolve.MaxReportedTokens would be refused.
func addTokens(a, b int64) int64 {
	return min(ClampTokens(a)+ClampTokens(b), resolve.MaxReportedTokens)
}

// Run reports until ctx ends, then once more for what is left.
func (r *UsageReporter) Run(ctx context.Context) {
	t := time.NewTicker(r.interval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			if err := r.Flush(context.Background()); err != nil {
				r.log.Error("LLM usage not reported at shutdown", "error", err)
			}
			return
		case <-t.C:
		case <-r.kick:
			if failing {
				continue // Vault failed the last report: retry on the tick, not on every request
			}
		}
		failing = r.Flush(ctx) != nil
	}
}

// Flush sends every pending report, at most resolve.MaxReports per call,
// and keeps those whose call failed for the next flush.
func (r *UsageReporter) Flush(ctx context.Context) error {
	r.mu.Lock()
	if len(r.pending) == 0 {
		r.mu.Unlock()
		return nil
	}
	all := make([]resolve.UsageReport, 0, len(r.pending))
	for _, p := range r.pending {
		all = append(all, *p)
		if p.Settled > 0 {
			r.settling[p.Accessor] += p.Settled
		}
	}
	r.pending = make(map[string]*resolve.UsageReport, len(all))
	r.mu.Unlock()
	defer r.flushEnded(all)

	var firstErr error
	for len(all) > 0 {
		n := min(len(all), resolve.MaxReports)
		batch := all[:n]
		all = all[n:]
		err := r.report(ctx, batch)
		if err == nil {
			continue
		}
		r.metrics.UsageReportFailed()
		if firstErr == nil {
			firstErr = err
		}
		if r.malformed != nil && r.malformed(err) {
			// Every count is clamped to what the engine takes, so this is
			// a bug; the settlements in the batch are lost with it.
			r.log.Error("Vault refused a usage report as malformed; dropping it", "error", err, "tokens", n)
			for range batch {
				r.metrics.UsageDropped()
			}
			continue
		}
		r.log.Warn("reporting LLM usage to Vault failed; keeping it for the next report", "error", err, "tokens", n)
		r.mu.Lock()
		for _, rep := range batch {
			r.mergeLocked(rep)
		}
		r.mu.Unlock()
	}
	return firstErr
}

// report makes one call to the sink, within the timeout.
func (r *UsageReporter) report(ctx context.Context, batch []resolve.UsageReport) error {
	if r.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, r.timeout)
		defer cancel()
	}
	return r.sink.ReportUsage(ctx, batch)
}

// flushEnded forgets the settlements of a flush (reported, or back in
// pending) and wakes those waiting for them.
func (r *UsageReporter) flushEnded(sent []resolve.UsageReport) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rep := range sent {
		if rep.Settled > 0 {
			if r.settling[rep.Accessor] -= rep.Settled; r.settling[rep.Accessor] <= 0 {
				delete(r.settling, rep.Accessor)
			}
		}
	}
	close(r.flushed)
	r.flushed = make(chan struct{})
}

// AwaitSettled waits, within ctx and maxSettleWait, until the settlements
// held for accessor have been reported, and reports whether it held any.
// A token's request that the engine finds pending may be waiting only for
// this proxy's report of the token's last request: a sequential agent's
// next request, sent as soon as it has the last answer's end. A nil
// reporter holds none.
func (r *UsageReporter) AwaitSettled(ctx context.Context, accessor string) bool {
	if r == nil {
		return false
	}
	timer := time.NewTimer(maxSettleWait)
	defer timer.Stop()
	held := false
	for {
		r.mu.Lock()
		p := r.pending[accessor]
		waiting := p != nil && p.Settled > 0 || r.settling[accessor] > 0
		flushed := r.flushed
		r.mu.Unlock()
		if !waiting {
			return held
		}
		held = true
		select {
		case r.kick <- struct{}{}:
		default:
		}
		select {
		case <-flushed:
		case <-timer.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}

// maxSettleWait bounds AwaitSettled: a report call takes about a
// millisecond; one that takes longer is failing.
const maxSettleWait = 250 * time.Millisecond
