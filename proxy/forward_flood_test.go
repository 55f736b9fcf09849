package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/phantomvault/phantom/internal/resolve"
)

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

func (e *echoTunnels) resolveMany(ctx context.Context, reqs []ResolveRequest) ([]*Decision, error) {
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
			d, err := b.resolve(context.Background(), ResolveRequest{Path: p})
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
	if _, err := b.checkTunnel(context.Background(), req); !errors.Is(err, errOverloaded) {
		t.Fatalf("a check with a full queue: %v, want errOverloaded", err)
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

// take holds a unit while the call is made: a concurrent burst passes no
// more than the budget, and a unit given back is there again.
func TestUnknownTokenLimitTake(t *testing.T) {
	l := newUnknownTokenLimit(0.001, 5)
	var passed atomic.Int64
	var wg sync.WaitGroup
	backs := make(chan func(), 100)
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if wait, back := l.take("192.0.2.1"); wait == 0 {
				passed.Add(1)
				backs <- back
			} else if wait < time.Second {
				t.Errorf("a wait of %v at 0.001/s", wait)
			}
		}()
	}
	wg.Wait()
	close(backs)
	if n := passed.Load(); n != 5 {
		t.Fatalf("%d of 100 concurrent takes passed, burst is 5", n)
	}
	if wait, _ := l.take("192.0.2.1"); wait == 0 {
		t.Fatal("a take passed with every unit taken")
	}
	back := <-backs
	back()
	back() // once only
	if wait, _ := l.take("192.0.2.1"); wait != 0 {
		t.Fatal("a unit given back was not there again")
	}
	if wait, _ := l.take("192.0.2.1"); wait == 0 {
		t.Fatal("a unit given back twice counted twice")
	}
	if wait, _ := l.take("192.0.2.2"); wait != 0 {
		t.Fatal("another address was limited")
	}
	// A token allowed lately passes until the engine finds it dead.
	l.resolved(keyOf("phm_good"))
	if !l.recentlyAllowed(keyOf("phm_good")) || l.recentlyAllowed(keyOf("")) {
		t.Fatal("recentlyAllowed")
	}
	l.forget(keyOf("phm_good"))
	if l.recentlyAllowed(keyOf("phm_good")) {
		t.Fatal("a forgotten token still passes")
	}
	var off *unknownTokenLimit
	if wait, back := off.take("192.0.2.1"); wait != 0 || back == nil {
		t.Fatal("a disabled limit limited")
	}
}

// count is how many CONNECT checks the engine had, to origin (any if empty).
func (g *grantTunnels) count(origin string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := 0
	for _, c := range g.calls {
		if origin == "" || c.Origin == origin {
			n++
		}
	}
	return n
}

// A burst of CONNECTs without a token, to hosts no route names, from one
// address: the engine is asked at most the burst (plus the refill while it
// runs); every one is refused at once; a live token from another address
// is not held back.
func TestForwardTokenlessFloodIsBounded(t *testing.T) {
	f := newForwardFixture(t)
	start := time.Now()
	var wg sync.WaitGroup
	codes := make(chan int, 150)
	for i := range 150 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, _ := connectStatus(t, f.fwdAddr, fmt.Sprintf("h%d.nowhere.test:443", i), "")
			codes <- resp.StatusCode
		}()
	}
	wg.Wait()
	close(codes)
	elapsed := time.Since(start)
	var limited int
	for c := range codes {
		switch c {
		case 403:
		case 429:
			limited++
		default:
			t.Fatalf("a tokenless CONNECT to a host no route names got %d", c)
		}
	}
	calls := f.tunnels.count("")
	most := DefaultUnknownTokenBurst + int(elapsed.Seconds()*DefaultUnknownTokenRate) + 1
	t.Logf("150 tokenless CONNECTs in %v: %d checks reached the engine, %d answered 429", elapsed, calls, limited)
	if calls > most || limited < 150-most {
		t.Fatalf("%d of 150 tokenless CONNECTs reached the engine (%d limited), want at most %d", calls, limited, most)
	}
	// Another address, with a live token: served.
	c := f.client(f.p.token)
	c.Transport.(*http.Transport).DialContext = (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).DialContext
	resp, err := c.Get("https://example.com/v1/customers")
	if err != nil {
		t.Fatalf("a live token from another address: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("a live token from another address: %d", resp.StatusCode)
	}
	// And, once allowed, from the flooding address too (agents behind one
	// NAT with a client that floods keep working).
	c = f.client(f.p.token)
	if resp, err = c.Get("https://example.com/v1/customers"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("a token allowed lately, from the flooding address: %v %v", resp, err)
	}
	resp.Body.Close()
}

// A refused origin is remembered for a few seconds, for CONNECTs without a
// token only; an allowed one never is, nor a failed call.
func TestForwardRefusedOriginsRemembered(t *testing.T) {
	f := newForwardFixture(t)
	const nowhere = "nowhere.test:443"
	for range 10 {
		if resp, body := connectStatus(t, f.fwdAddr, nowhere, ""); resp.StatusCode != 403 || !strings.Contains(body, "origin_not_allowed") {
			t.Fatalf("CONNECT %s: %d %s", nowhere, resp.StatusCode, body)
		}
	}
	if n := f.tunnels.count(nowhere); n != 1 {
		t.Fatalf("10 tokenless CONNECTs to one refused origin made %d checks, want 1", n)
	}
	// With a token, the engine is asked (its answer depends on the token).
	connectStatus(t, f.fwdAddr, nowhere, f.p.token)
	if n := f.tunnels.count(nowhere); n != 2 {
		t.Fatalf("a CONNECT with a token was answered from the remembered refusal (%d checks)", n)
	}
	// An origin allowed is asked about every time.
	for range 3 {
		if resp, _ := connectStatus(t, f.fwdAddr, "example.com:443", ""); resp.StatusCode != 200 {
			t.Fatalf("CONNECT example.com:443 without a token: %d", resp.StatusCode)
		}
	}
	if n := f.tunnels.count("example.com:443"); n != 3 {
		t.Fatalf("3 allowed CONNECTs made %d checks: an approval was cached", n)
	}
	// A route created for the refused origin serves it within a few seconds.
	u, _ := url.Parse("https://nowhere.test")
	f.p.resolver.mu.Lock()
	f.p.resolver.grants["phm_other"] = &Grant{Route: "n", Upstream: u}
	f.p.resolver.mu.Unlock()
	deadline := time.Now().Add(refusedOriginAge + 5*time.Second)
	for {
		resp, _ := connectStatus(t, f.fwdAddr, nowhere, "")
		if resp.StatusCode == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a route's new origin still refused after %v", refusedOriginAge+5*time.Second)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Vault unavailable: nothing remembered, so the next CONNECT asks again.
	f.tunnels.mu.Lock()
	f.tunnels.err = errors.New("Vault is down")
	f.tunnels.mu.Unlock()
	before := f.tunnels.count("")
	for range 2 {
		if resp, _ := connectStatus(t, f.fwdAddr, "elsewhere.test:443", ""); resp.StatusCode != 503 {
			t.Fatalf("Vault down: %d", resp.StatusCode)
		}
	}
	if n := f.tunnels.count("") - before; n != 2 {
		t.Fatalf("%d checks for 2 CONNECTs while Vault was down", n)
	}
}

// VaultResolver.CheckTunnel goes through the batcher: with the default
// -vault-concurrency of 1, CONNECT checks and resolves never reach Vault two
// at a time.
func TestVaultTunnelChecksShareTheConcurrency(t *testing.T) {
	fv := &fakeVault{resolve: func(string) (int, string) { return http.StatusOK, allowJSON }}
	var inFlight, most, checks atomic.Int64
	vault := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v1/phantom/") {
			n := inFlight.Add(1)
			defer inFlight.Add(-1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			time.Sleep(2 * time.Millisecond)
		}
		if r.URL.Path == "/v1/phantom/tunnel" {
			checks.Add(1)
			io.WriteString(w, `{"data":{"allowed":false,"reason":"origin_not_allowed"}}`)
			return
		}
		fv.ServeHTTP(w, r)
	}))
	t.Cleanup(vault.Close)
	v := newTestResolverAt(t, vault.URL)
	var wg sync.WaitGroup
	errs := make(chan error, 80)
	for i := range 40 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			a, err := v.CheckTunnel(context.Background(), resolve.TunnelRequest{Origin: fmt.Sprintf("h%d.example:443", i), ClientIP: "192.0.2.1"})
			if err == nil && *a.Allowed {
				err = errors.New("allowed")
			}
			errs <- err
		}()
		go func() {
			defer wg.Done()
			_, err := v.Resolve(context.Background(), ResolveRequest{Token: "phm_x", Method: "GET", Path: "/v1/x", ClientIP: "192.0.2.1"})
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
	if m := most.Load(); m != 1 {
		t.Fatalf("%d calls to Vault at once with -vault-concurrency 1", m)
	}
	if n := checks.Load(); n != 40 {
		t.Fatalf("%d tunnel calls for 40 distinct checks", n)
	}
}
