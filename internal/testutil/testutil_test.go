package testutil

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// fatalRecorder stands in for a test, to see whether Eventually fails it.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	panic(errStop) // stops the caller, as t.Fatalf does
}

var errStop = errors.New("stopped")

func runEventually(timeout time.Duration, cond func() bool, format string, args ...any) (msg string) {
	f := &fatalRecorder{}
	defer func() {
		if r := recover(); r != nil && r != errStop {
			panic(r)
		}
		msg = f.msg
	}()
	Eventually(f, timeout, cond, format, args...)
	return ""
}

func TestEventuallyFailsLoudlyOnTimeout(t *testing.T) {
	var log LockedBuffer
	start := time.Now()
	msg := runEventually(100*time.Millisecond, func() bool { fmt.Fprint(&log, "."); return false }, "never held; log: %s", &log)
	if msg == "" {
		t.Fatal("Eventually returned without failing the test")
	}
	if time.Since(start) < 100*time.Millisecond {
		t.Fatalf("gave up after %v", time.Since(start))
	}
	if msg != "never held; log: "+log.String() {
		t.Fatalf("message %q does not show the buffer as it was at the failure", msg)
	}
}

func TestEventuallyReturnsOnceTrue(t *testing.T) {
	n := 0
	if msg := runEventually(5*time.Second, func() bool { n++; return n == 3 }, "failed"); msg != "" || n != 3 {
		t.Fatalf("msg %q after %d checks", msg, n)
	}
}

func TestLockedBufferConcurrent(t *testing.T) {
	var b LockedBuffer
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 100 {
				fmt.Fprint(&b, "x")
				_ = b.String()
			}
		})
	}
	wg.Wait()
	if len(b.String()) != 400 {
		t.Fatalf("%d bytes, want 400", len(b.String()))
	}
}
