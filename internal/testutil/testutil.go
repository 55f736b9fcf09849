// Package testutil holds the helpers that tests of every package share: a
// buffer safe to write and read at once, polling that fails the test when
// its condition never holds, and a stand-in for the engine's usage path.
package testutil

import (
	"bytes"
	"context"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/phantomvault/phantom/internal/resolve"
)

// LockedBuffer collects output written from other goroutines (a logger, a
// child process); tests read it while it is written.
type LockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *LockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// maxPollInterval bounds the wait between two checks: quick conditions are
// seen at once, slow ones (a Vault CLI run per check) do not load the machine.
const maxPollInterval = 50 * time.Millisecond

// Eventually checks cond until it holds. If timeout passes first it fails
// the test with t.Fatalf(format, args...), formatted then, so a log buffer
// among args shows what it held at the failure.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	interval := time.Millisecond
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf(format, args...)
		}
		time.Sleep(interval)
		interval = min(2*interval, maxPollInterval)
	}
}

// UsageSink stands in for the engine's usage path (a
// proxy/metering.UsageSink): it keeps the reports it is sent, and fails
// every call while SetFail(true) holds.
type UsageSink struct {
	mu      sync.Mutex
	reports []resolve.UsageReport
	calls   int
	fail    bool
}

func (s *UsageSink) ReportUsage(_ context.Context, reps []resolve.UsageReport) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.fail {
		return io.ErrUnexpectedEOF
	}
	s.reports = append(s.reports, reps...)
	return nil
}

// SetFail makes the calls from now on fail, or succeed.
func (s *UsageSink) SetFail(fail bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fail = fail
}

// Calls counts the calls made, failed ones included.
func (s *UsageSink) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// Reports are the reports taken so far, in order.
func (s *UsageSink) Reports() []resolve.UsageReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.reports)
}

// Reported sums what was taken for accessor, settlements included.
func (s *UsageSink) Reported(accessor string) resolve.UsageReport {
	sum := resolve.UsageReport{Accessor: accessor}
	for _, r := range s.Reports() {
		if r.Accessor == accessor {
			sum.InputTokens += r.InputTokens
			sum.OutputTokens += r.OutputTokens
			sum.Estimated += r.Estimated
			sum.Settled += r.Settled
		}
	}
	return sum
}
