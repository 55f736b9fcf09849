package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
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

func (e *echoCall) resolveMany(_ context.Context, reqs []resolve.Request) ([]*Decision, error) {
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
		ds[i] = &Decision{Answer: &resolve.Answer{Allowed: new(true), Route: r.Path}}
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
		d, err := b.resolve(context.Background(), resolve.Request{Path: fmt.Sprint("/", i)})
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
			d, err := b.resolve(context.Background(), resolve.Request{Path: path})
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
			_, err := b.resolve(context.Background(), resolve.Request{})
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
	go b.resolve(context.Background(), resolve.Request{Path: "/first"})
	waitInFlight(t, b, 1)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := b.resolve(ctx, resolve.Request{Path: "/gone"})
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
			_, err := b.resolve(context.Background(), resolve.Request{Path: "/x"})
			errs <- err
		}()
		if i == 0 {
			waitInFlight(t, b, 1)
		}
	}
	waitQueued(t, b, maxQueued)
	if _, err := b.resolve(context.Background(), resolve.Request{Path: "/y"}); !errors.Is(err, ErrOverloaded) {
		t.Fatalf("resolve with a full queue: %v, want ErrOverloaded", err)
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

// echoTunnels is echoCall that also checks tunnels: it records the most
// calls of either kind it ever had in flight at once.
type echoTunnels struct {
	echoCall
	inFlight, most atomic.Int64
	checks         atomic.Int64
}

func (e *echoTunnels) enter() func() {
	n := e.inFlight.Add(1)
	for {
		m := e.most.Load()
		if n <= m || e.most.CompareAndSwap(m, n) {
			break
		}
	}
	return func() { e.inFlight.Add(-1) }
}

func (e *echoTunnels) resolveMany(ctx context.Context, reqs []resolve.Request) ([]*Decision, error) {
	defer e.enter()()
	time.Sleep(time.Millisecond)
	return e.echoCall.resolveMany(ctx, reqs)
}

func (e *echoTunnels) checkTunnelOnce(_ context.Context, req resolve.TunnelRequest) (*resolve.TunnelAnswer, error) {
	defer e.enter()()
	e.checks.Add(1)
	if e.release != nil {
		<-e.release
	}
	time.Sleep(time.Millisecond)
	return &resolve.TunnelAnswer{Allowed: new(false), Reason: resolve.ReasonOriginNotAllowed, Message: req.Origin}, nil
}

// CONNECT checks take the resolves' slots: with -vault-concurrency 1, never
// two calls of any kind at once, and each check gets its own origin's answer.
func TestBatcherTunnelChecksShareTheBound(t *testing.T) {
	e := &echoTunnels{}
	b := newBatcher(e, 1, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for i := range 100 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			o := fmt.Sprintf("h%d.example:443", i)
			a, err := b.checkTunnel(context.Background(), resolve.TunnelRequest{Origin: o, ClientIP: "192.0.2.1"})
			if err == nil && a.Message != o {
				err = fmt.Errorf("the check of %s got %s's answer", o, a.Message)
			}
			errs <- err
		}()
		go func() {
			defer wg.Done()
			p := fmt.Sprint("/", i)
			d, err := b.resolve(context.Background(), resolve.Request{Path: p})
			if err == nil && d.Route != p {
				err = fmt.Errorf("resolve %s got %s", p, d.Route)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if m := e.most.Load(); m != 1 {
		t.Fatalf("%d calls to Vault at once with a concurrency of 1", m)
	}
	if n := e.checks.Load(); n != 100 {
		t.Fatalf("%d tunnel calls for 100 distinct checks", n)
	}
}

// Identical checks queued together share one call; a full queue sheds a
// check as it sheds a resolve.
func TestBatcherTunnelChecksQueueAndShed(t *testing.T) {
	e := &echoTunnels{echoCall: echoCall{release: make(chan struct{})}}
	b := newBatcher(e, 1, nil)
	req := resolve.TunnelRequest{Origin: "evil.example:443", ClientIP: "192.0.2.1"}
	var wg sync.WaitGroup
	errs := make(chan error, maxQueued+1)
	for i := range maxQueued + 1 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := b.checkTunnel(context.Background(), req)
			errs <- err
		}()
		if i == 0 {
			waitInFlight(t, b, 1)
		}
	}
	waitQueued(t, b, maxQueued)
	if _, err := b.checkTunnel(context.Background(), req); !errors.Is(err, ErrOverloaded) {
		t.Fatalf("a check with a full queue: %v, want ErrOverloaded", err)
	}
	close(e.release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("a queued check failed: %v", err)
		}
	}
	// The first alone, then the queue in batches of maxBatch, one call each.
	if n, most := e.checks.Load(), int64(1+(maxQueued+maxBatch-1)/maxBatch); n > most {
		t.Fatalf("%d tunnel calls for %d identical checks, want at most %d", n, maxQueued+1, most)
	}
}
