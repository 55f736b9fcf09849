package proxy

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/phantomvault/phantom/internal/resolve"
)

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

// tunnelChecks is how many CONNECT checks the engine had, to origin (any if
// empty).
func (f *forwardFixture) tunnelChecks(origin string) int {
	n := 0
	for _, c := range f.p.engine.Tunnels() {
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
	calls := f.tunnelChecks("")
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
	if n := f.tunnelChecks(nowhere); n != 1 {
		t.Fatalf("10 tokenless CONNECTs to one refused origin made %d checks, want 1", n)
	}
	// With a token, the engine is asked (its answer depends on the token).
	connectStatus(t, f.fwdAddr, nowhere, f.p.token)
	if n := f.tunnelChecks(nowhere); n != 2 {
		t.Fatalf("a CONNECT with a token was answered from the remembered refusal (%d checks)", n)
	}
	// An origin allowed is asked about every time.
	for range 3 {
		if resp, _ := connectStatus(t, f.fwdAddr, "example.com:443", ""); resp.StatusCode != 200 {
			t.Fatalf("CONNECT example.com:443 without a token: %d", resp.StatusCode)
		}
	}
	if n := f.tunnelChecks("example.com:443"); n != 3 {
		t.Fatalf("3 allowed CONNECTs made %d checks: an approval was cached", n)
	}
	// A route created for the refused origin serves it within a few seconds.
	u, _ := url.Parse("https://nowhere.test")
	f.p.engine.Allow("phm_other", &resolve.Grant{Route: "n", Upstream: u})
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
	f.p.engine.Fail(errors.New("Vault is down"))
	before := f.tunnelChecks("")
	for range 2 {
		if resp, _ := connectStatus(t, f.fwdAddr, "elsewhere.test:443", ""); resp.StatusCode != 503 {
			t.Fatalf("Vault down: %d", resp.StatusCode)
		}
	}
	if n := f.tunnelChecks("") - before; n != 2 {
		t.Fatalf("%d checks for 2 CONNECTs while Vault was down", n)
	}
}

// A flood of CONNECTs without a token to an origin a route names: each is
// allowed, and still each takes a unit of its address's budget, so the
// engine is asked at most the burst (plus the refill while it runs).
func TestForwardTokenlessAllowedFloodIsBounded(t *testing.T) {
	f := newForwardFixture(t)
	start := time.Now()
	ok, limited := 0, 0
	for range 3 * DefaultUnknownTokenBurst {
		switch resp, _ := connectStatus(t, f.fwdAddr, "example.com:443", ""); resp.StatusCode {
		case 200:
			ok++
		case 429:
			limited++
		default:
			t.Fatalf("a tokenless CONNECT to the route's origin got %d", resp.StatusCode)
		}
	}
	most := DefaultUnknownTokenBurst + int(time.Since(start).Seconds()*DefaultUnknownTokenRate) + 1
	if calls := f.tunnelChecks(""); calls > most || ok == 0 || limited == 0 {
		t.Fatalf("%d tokenless CONNECTs to an allowed origin made %d checks (%d opened, %d limited), want at most %d",
			3*DefaultUnknownTokenBurst, calls, ok, limited, most)
	}
}
