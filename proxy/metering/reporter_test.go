package metering

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/proxy/engine/enginetest"
)

// countingMetrics counts what the reporter could not deliver.
type countingMetrics struct{ failed, dropped atomic.Int64 }

func (m *countingMetrics) UsageReportFailed() { m.failed.Add(1) }
func (m *countingMetrics) UsageDropped()      { m.dropped.Add(1) }

// newTestReporter reports to sink on an hour's tick: only what a test
// flushes, or a kick, goes out.
func newTestReporter(sink UsageSink, m ReporterMetrics) *UsageReporter {
	return NewUsageReporter(sink, ReporterConfig{Interval: time.Hour, Timeout: time.Second, Metrics: m, Log: hclog.NewNullLogger()})
}

func TestUsageReporterKeepsWhatFailed(t *testing.T) {
	m := &countingMetrics{}
	sink := enginetest.New()
	sink.Fail(errors.New("vault is down"))
	r := newTestReporter(sink, m)
	for i := range 3000 {
		r.Add(resolve.UsageReport{Accessor: fmt.Sprintf("pha_%d", i%1500), InputTokens: 1, OutputTokens: 2}, nil)
	}
	if err := r.Flush(t.Context()); err == nil {
		t.Fatal("a failing sink reported success")
	}
	if n := sink.ReportCalls(); n != 2 { // 1500 tokens: two calls of at most MaxReports
		t.Fatalf("%d calls", n)
	}
	sink.Fail(nil)
	r.Add(resolve.UsageReport{Accessor: "pha_0", InputTokens: 10, Estimated: 1}, nil)
	if err := r.Flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := sink.Reported("pha_0"); got.InputTokens != 12 || got.OutputTokens != 4 || got.Estimated != 1 {
		t.Fatalf("pha_0: %d %d %d", got.InputTokens, got.OutputTokens, got.Estimated)
	}
	if got := sink.Reported("pha_1499"); got.InputTokens != 2 {
		t.Fatalf("pha_1499: %d", got.InputTokens)
	}
	if n := m.failed.Load(); n != 2 {
		t.Fatalf("%d failures counted, want 2", n)
	}
}

// Run's end sends what is left: usage measured just before shutdown is
// not lost.
func TestUsageReporterDrainsOnShutdown(t *testing.T) {
	sink := enginetest.New()
	r := newTestReporter(sink, &countingMetrics{})
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	r.Add(resolve.UsageReport{Accessor: "pha_a", InputTokens: 3, OutputTokens: 4}, nil)
	cancel()
	<-done
	if got := sink.Reported("pha_a"); got.InputTokens != 3 || got.OutputTokens != 4 {
		t.Fatalf("after shutdown: %d %d", got.InputTokens, got.OutputTokens)
	}
}

// Under a budget, usage and settlements go to Vault at once when the
// budget is close to spent, or when what is unreported of the token reaches
// half of what was left; far from both, they wait for the tick.
func TestReportNow(t *testing.T) {
	far := &resolve.Limits{MaxOutputTokens: 10, BudgetRemaining: new(int64(10000))}
	near := &resolve.Limits{MaxOutputTokens: 10, BudgetRemaining: new(int64(settleSoonCaps * 10))}
	for _, c := range []struct {
		name       string
		l          *resolve.Limits
		unreported int64
		want       bool
	}{
		{"no limits", nil, 1 << 30, false},
		{"no budget", &resolve.Limits{MaxOutputTokens: 10}, 1 << 30, false},
		{"far from the end, little unreported", far, 4999, false},
		{"far from the end, half of it unreported", far, 5000, true},
		{"close to the end", near, 0, true},
	} {
		if got := reportNow(c.l, c.unreported); got != c.want {
			t.Errorf("%s: reportNow = %v, want %v", c.name, got, c.want)
		}
	}

	sink := enginetest.New()
	r := newTestReporter(sink, &countingMetrics{})
	go r.Run(t.Context())
	r.Add(resolve.UsageReport{Accessor: "pha_test", InputTokens: 100, Settled: 1}, far)
	time.Sleep(100 * time.Millisecond)
	if got := sink.Reported("pha_test"); got.Settled != 0 {
		t.Fatalf("usage far from the budget's end was reported before the tick: %+v", got)
	}
	// A large answer: what is unreported now reaches half of what was left.
	r.Add(resolve.UsageReport{Accessor: "pha_test", InputTokens: 4900, Settled: 1}, far)
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if got := sink.Reported("pha_test"); got.Settled == 2 && got.InputTokens == 5000 {
			return
		}
	}
	t.Fatalf("half of the budget unreported waited for the tick: %+v", sink.Reported("pha_test"))
}

// slowSink takes delay to take each report.
type slowSink struct {
	*enginetest.Engine
	delay time.Duration
}

func (s *slowSink) ReportUsage(ctx context.Context, reps []resolve.UsageReport) error {
	time.Sleep(s.delay)
	return s.Engine.ReportUsage(ctx, reps)
}

// AwaitSettled returns once this proxy's settlements of the token are in
// Vault, and says whether there were any.
func TestAwaitSettled(t *testing.T) {
	sink := &slowSink{Engine: enginetest.New(), delay: 50 * time.Millisecond}
	r := newTestReporter(sink, &countingMetrics{})
	go r.Run(t.Context())
	if r.AwaitSettled(t.Context(), "pha_test") {
		t.Fatal("nothing to wait for, yet it waited")
	}
	r.Add(resolve.UsageReport{Accessor: "pha_test", OutputTokens: 5, Settled: 1}, nil)
	if !r.AwaitSettled(t.Context(), "pha_test") {
		t.Fatal("it did not wait for the settlement")
	}
	if got := sink.Reported("pha_test"); got.Settled != 1 || got.OutputTokens != 5 {
		t.Fatalf("returned before the report was in: %+v", got)
	}
	var nilReporter *UsageReporter
	if nilReporter.AwaitSettled(t.Context(), "pha_test") {
		t.Fatal("a proxy without a reporter waited")
	}
}
