// Package testutil holds the helpers that tests of every package share: a
// buffer safe to write and read at once, polling that fails the test when
// its condition never holds, and a stand-in for the engine's usage path.
package testutil

import (
	"bytes"
	"sync"
	"testing"
	"time"
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
