package proxy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/internal/testutil"
)

// echoCall decides each request by echoing its path as the route, so a test
// can tell that every request got its own decision. Calls block until
// release is closed, when one is given.
type echoCall struct {
	mu      sync.Mutex
	sizes   []int
	release chan struct{}
	err     error
}

// checkTunnelOnce: tests of resolves check no tunnel (echoTunnels does).
func (e *echoCall) checkTunnelOnce(context.Context, resolve.TunnelRequest) (*resolve.TunnelAnswer, error) {
	return nil, errors.New("echoCall checks no tunnel")
}

func (e *echoCall) resolveMany(_ context.Context, reqs []ResolveRequest) ([]*Decision, error) {
	e.mu.Lock()
	e.sizes = append(e.sizes, len(reqs))
	e.mu.Unlock()
	if e.release != nil {
		<-e.release
	}
	if e.err != nil {
		return nil, e.err
	}
	ds := make([]*Decision, len(reqs))
	for i, r := range reqs {
		ds[i] = &Decision{Allowed: true, Route: r.Path}
	}
	return ds, nil
}

func (e *echoCall) callSizes() []int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.sizes)
}

func TestBatcherIdleSendsAtOnce(t *testing.T) {
	e := &echoCall{}
	b := newBatcher(e, 2, nil)
	for i := range 5 {
		d, err := b.resolve(context.Background(), ResolveRequest{Path: fmt.Sprint("/", i)})
		if err != nil || d.Route != fmt.Sprint("/", i) {
			t.Fatalf("request %d: %+v %v", i, d, err)
		}
	}
	if got := e.callSizes(); !slices.Equal(got, []int{1, 1, 1, 1, 1}) {
		t.Fatalf("call sizes %v: an idle proxy must send each request alone", got)
	}
}

// waitQueued waits until n requests wait in b's queue.
func waitQueued(t *testing.T, b *batcher, n int) {
	t.Helper()
	waitBatcher(t, b, "queued", func() int { return len(b.queue) }, n)
}

// waitInFlight waits until n calls are in flight.
func waitInFlight(t *testing.T, b *batcher, n int) {
	t.Helper()
	waitBatcher(t, b, "in flight", func() int { return b.inFlight }, n)
}

func waitBatcher(t *testing.T, b *batcher, what string, get func() int, n int) {
	t.Helper()
	testutil.Eventually(t, 5*time.Second, func() bool {
		b.mu.Lock()
		defer b.mu.Unlock()
		return get() == n
	}, "requests %s never reached %d in 5s", what, n)
}

func TestBatcherBatchesWhileBusy(t *testing.T) {
	e := &echoCall{release: make(chan struct{})}
	b := newBatcher(e, 2, nil)
	const n = 12
	type result struct {
		path string
		d    *Decision
		err  error
	}
	results := make(chan result, n)
	for i := range n {
		path := fmt.Sprint("/", i)
		go func() {
			d, err := b.resolve(context.Background(), ResolveRequest{Path: path})
			results <- result{path, d, err}
		}()
		if i == 1 {
			waitInFlight(t, b, 2)
		}
	}
	waitQueued(t, b, n-2)
	close(e.release)
	for range n {
		r := <-results
		if r.err != nil || r.d.Route != r.path {
			t.Errorf("request %s got %+v %v", r.path, r.d, r.err)
		}
	}
	sizes := e.callSizes()
	slices.Sort(sizes)
	if !slices.Equal(sizes, []int{1, 1, n - 2}) {
		t.Fatalf("call sizes %v, want two single calls and one batch of %d", sizes, n-2)
	}
	waitInFlight(t, b, 0)
}

func TestBatcherFailsEveryRequestOfAFailedCall(t *testing.T) {
	e := &echoCall{release: make(chan struct{}), err: errors.New("Vault is sealed")}
	b := newBatcher(e, 1, nil)
	errs := make(chan error, 4)
	for i := range 4 {
		go func() {
			_, err := b.resolve(context.Background(), ResolveRequest{})
			errs <- err
		}()
		if i == 0 {
			waitInFlight(t, b, 1)
		}
	}
	waitQueued(t, b, 3)
	close(e.release)
	for range 4 {
		if err := <-errs; err == nil {
			t.Fatal("a request of a failed call got a decision")
		}
	}
	waitInFlight(t, b, 0)
}

func TestBatcherQueuedRequestGivesUpWithItsContext(t *testing.T) {
	e := &echoCall{release: make(chan struct{})}
	b := newBatcher(e, 1, nil)
	go b.resolve(context.Background(), ResolveRequest{Path: "/first"})
	waitInFlight(t, b, 1)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := b.resolve(ctx, ResolveRequest{Path: "/gone"})
		errc <- err
	}()
	waitQueued(t, b, 1)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("a cancelled request got %v", err)
	}
	waitQueued(t, b, 0) // it left the queue: Vault never hears of it
	close(e.release)
	waitInFlight(t, b, 0)
	if got := e.callSizes(); !slices.Equal(got, []int{1}) {
		t.Fatalf("call sizes %v, want only the first request's call", got)
	}
}

// A full queue sheds the next request at once rather than growing.
func TestBatcherShedsWhenTheQueueIsFull(t *testing.T) {
	e := &echoCall{release: make(chan struct{})}
	b := newBatcher(e, 1, nil)
	var wg sync.WaitGroup
	errs := make(chan error, maxQueued+1)
	for i := range maxQueued + 1 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := b.resolve(context.Background(), ResolveRequest{Path: "/x"})
			errs <- err
		}()
		if i == 0 {
			waitInFlight(t, b, 1)
		}
	}
	waitQueued(t, b, maxQueued)
	if _, err := b.resolve(context.Background(), ResolveRequest{Path: "/y"}); !errors.Is(err, errOverloaded) {
		t.Fatalf("resolve with a full queue: %v, want errOverloaded", err)
	}
	close(e.release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a queued request failed: %v", err)
		}
	}
}
