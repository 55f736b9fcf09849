package limits

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestGCRA(t *testing.T) {
	l := NewLimiter()
	now := time.Unix(1000, 0)
	tok := Check{Key: "t", Rate: &Rate{N: 3, Period: time.Minute}}
	for i := range 3 {
		if ok, _ := l.Allow(now, tok, Check{}); !ok {
			t.Fatalf("request %d of a burst of 3 refused", i+1)
		}
	}
	ok, retry := l.Allow(now, tok, Check{})
	if ok || retry != 20*time.Second {
		t.Fatalf("4th request: ok=%v retry=%v, want refused for 20s", ok, retry)
	}
	if ok, retry := l.Allow(now.Add(20*time.Second-time.Millisecond), tok, Check{}); ok || retry != time.Millisecond {
		t.Fatalf("1ms early: ok=%v retry=%v", ok, retry)
	}
	if ok, _ := l.Allow(now.Add(20*time.Second), tok, Check{}); !ok {
		t.Fatal("refused at the time Retry-After named")
	}
	if kept := l.Sweep(now.Add(time.Hour)); kept != 0 {
		t.Fatalf("sweep kept %d windows that have passed", kept)
	}
}

// TestGCRABothOrNothing: a request refused by one of its two limits spends
// nothing of the other.
func TestGCRABothOrNothing(t *testing.T) {
	l := NewLimiter()
	now := time.Unix(1000, 0)
	route := Check{Route: true, Key: "r/1", Rate: &Rate{N: 2, Period: time.Minute}}
	tokA := Check{Key: "a", Rate: &Rate{N: 5, Period: time.Minute}}
	tokB := Check{Key: "b", Rate: &Rate{N: 5, Period: time.Minute}}
	for _, tok := range []Check{tokA, tokA} {
		if ok, _ := l.Allow(now, tok, route); !ok {
			t.Fatal("refused within both limits")
		}
	}
	// The route is spent: b is refused and keeps all 5 of its own.
	if ok, _ := l.Allow(now, tokB, route); ok {
		t.Fatal("allowed past the route's limit")
	}
	for i := range 5 {
		if ok, _ := l.Allow(now, tokB, Check{}); !ok {
			t.Fatalf("b lost request %d of its own limit to a refusal by the route's", i+1)
		}
	}
}

func TestGCRAExactUnderConcurrency(t *testing.T) {
	l := NewLimiter()
	now := time.Unix(1000, 0)
	route := Check{Route: true, Key: "r/1", Rate: &Rate{N: 50, Period: time.Hour}}
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok := Check{Key: string(rune('a' + g)), Rate: &Rate{N: 10, Period: time.Hour}}
			for range 20 {
				if ok, _ := l.Allow(now, tok, route); ok {
					allowed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if allowed.Load() != 50 {
		t.Fatalf("allowed %d, want exactly the route's 50", allowed.Load())
	}
}
