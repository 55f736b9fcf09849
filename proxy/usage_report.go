package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/api"

	"github.com/phantomvault/phantom/internal/resolve"
)

// Defaults of the usage reporter.
const (
	DefaultUsageReportInterval = time.Second
	// usageFlushAt starts a report before the interval is up once this many
	// tokens have usage waiting.
	usageFlushAt = 512
	// maxUsagePending bounds the tokens whose usage waits for Vault. Totals
	// are kept per token, so a Vault that is down for long costs no more
	// memory; only usage of tokens beyond this many is dropped (logged and
	// counted).
	maxUsagePending = 100_000
)

// UsageSink takes usage reports to the engine: VaultResolver.ReportUsage.
type UsageSink interface {
	ReportUsage(ctx context.Context, reports []resolve.UsageReport) error
}

// UsageReporter adds up the usage the proxy measures, per token, and
// reports it to the engine in batches, every interval or sooner once many
// tokens wait: never on a request's path. A report that fails is kept and
// sent again with the next; Run's end sends what is left.
type UsageReporter struct {
	sink     UsageSink
	interval time.Duration
	timeout  time.Duration
	metrics  *Metrics
	log      hclog.Logger

	mu      sync.Mutex
	pending map[string]*resolve.UsageReport // accessor -> totals
	kick    chan struct{}
}

// NewUsageReporter reports to sink every interval (DefaultUsageReportInterval
// if zero), each call bounded by timeout.
func NewUsageReporter(sink UsageSink, interval, timeout time.Duration, m *Metrics, log hclog.Logger) *UsageReporter {
	if interval <= 0 {
		interval = DefaultUsageReportInterval
	}
	if timeout <= 0 {
		timeout = DefaultVaultTimeout
	}
	return &UsageReporter{
		sink: sink, interval: interval, timeout: timeout, metrics: m, log: log,
		pending: map[string]*resolve.UsageReport{},
		kick:    make(chan struct{}, 1),
	}
}

// add records one response's usage for accessor.
func (r *UsageReporter) add(accessor string, input, output int64, estimated bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.mergeLocked(resolve.UsageReport{Accessor: accessor, InputTokens: input, OutputTokens: output, Estimated: boolCount(estimated)}) {
		return
	}
	if len(r.pending) >= usageFlushAt {
		select {
		case r.kick <- struct{}{}:
		default:
		}
	}
}

func boolCount(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// mergeLocked adds rep to the pending totals; false when it had to be dropped.
func (r *UsageReporter) mergeLocked(rep resolve.UsageReport) bool {
	p := r.pending[rep.Accessor]
	if p == nil {
		if len(r.pending) >= maxUsagePending {
			r.metrics.usageDropped()
			r.log.Error("dropping LLM usage: too many tokens wait for Vault to take their usage", "accessor", rep.Accessor,
				"input_tokens", rep.InputTokens, "output_tokens", rep.OutputTokens)
			return false
		}
		p = &resolve.UsageReport{Accessor: rep.Accessor}
		r.pending[rep.Accessor] = p
	}
	p.InputTokens += rep.InputTokens
	p.OutputTokens += rep.OutputTokens
	p.Estimated += rep.Estimated
	return true
}

// Run reports until ctx ends, then once more for what is left.
func (r *UsageReporter) Run(ctx context.Context) {
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			if err := r.flush(context.Background()); err != nil {
				r.log.Error("LLM usage not reported at shutdown", "error", err)
			}
			return
		case <-t.C:
		case <-r.kick:
		}
		r.flush(ctx)
	}
}

// flush sends every pending report, at most resolve.MaxReports per call,
// and keeps those whose call failed for the next flush.
func (r *UsageReporter) flush(ctx context.Context) error {
	r.mu.Lock()
	if len(r.pending) == 0 {
		r.mu.Unlock()
		return nil
	}
	all := make([]resolve.UsageReport, 0, len(r.pending))
	for _, p := range r.pending {
		all = append(all, *p)
	}
	r.pending = make(map[string]*resolve.UsageReport, len(all))
	r.mu.Unlock()

	var firstErr error
	for len(all) > 0 {
		n := min(len(all), resolve.MaxReports)
		batch := all[:n]
		all = all[n:]
		callCtx, cancel := context.WithTimeout(ctx, r.timeout)
		err := r.sink.ReportUsage(callCtx, batch)
		cancel()
		if err == nil {
			continue
		}
		r.metrics.usageReportFailed()
		if firstErr == nil {
			firstErr = err
		}
		var vErr *vaultError
		if errors.As(err, &vErr) && vErr.status == http.StatusBadRequest && !isForwardRefused(err) {
			// The engine refused the batch as malformed and applied none of
			// it: sending it again would be refused again.
			r.log.Error("Vault refused a usage report as malformed; dropping it", "error", err, "tokens", n)
			for range batch {
				r.metrics.usageDropped()
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

// ReportUsage sends reports to the engine's usage path in one call. It
// uses PATCH, as resolve does (no existence check), the resolve call's
// connections and, like resolve, asks for the active node: the engine keeps
// the totals that budgets are decided from there. A 403 is not answered
// with a login here: the next resolve does that, and the report is sent
// again with the next flush.
func (v *VaultResolver) ReportUsage(ctx context.Context, reports []resolve.UsageReport) error {
	if !v.session.authed.Load() {
		return errNotAuthenticated
	}
	body, err := json.Marshal(resolve.UsageBatch{Reports: reports})
	if err != nil {
		return err
	}
	c := v.resolve
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPatch, strings.TrimSuffix(c.url, "/resolve")+"/usage", bytes.NewReader(body))
	if err != nil {
		return err
	}
	for k, vals := range c.headers {
		hreq.Header[k] = vals
	}
	hreq.Header.Set("Content-Type", "application/merge-patch+json")
	hreq.Header.Set("X-Vault-Token", v.session.client.Token())
	if c.forward.Load() {
		hreq.Header.Set(api.HeaderForward, "active-node")
	}
	resp, err := c.http.Do(hreq)
	if err != nil {
		return fmt.Errorf("reporting usage to Vault: %w", err)
	}
	defer resp.Body.Close()
	var out struct {
		Errors []string `json:"errors"`
	}
	json.NewDecoder(io.LimitReader(resp.Body, maxResolveAnswer)).Decode(&out)
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxResolveAnswer))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("reporting usage to Vault: %w", &vaultError{status: resp.StatusCode, errors: out.Errors})
	}
	return nil
}
