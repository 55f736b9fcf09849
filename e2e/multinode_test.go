package e2e

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/phantomvault/phantom/e2e/harness"
)

// TestRollingRestartServes: a 3-node Raft cluster and two proxies, each
// given every node's address. Every node is restarted in turn (the leader
// last, each down for 3s) under steady load: a live token is never refused
// and a revoked one never allowed, a request Vault cannot answer gets 503,
// and both proxies serve again once the cluster does. (The share served is
// logged, not asserted: on a loaded machine it depends on how long Raft
// takes; the benchmarks measure it.) Then the leader is killed: the proxies
// serve again within the election time.
func TestRollingRestartServes(t *testing.T) {
	nodes := harness.StartRaftCluster(t, 3)
	upstreamRoute(t, nodes[0], "demo")
	all := "-vault-addr=" + harness.Addrs(nodes)
	proxies := []*harness.Proxy{harness.StartProxy(t, nodes[1], all), harness.StartProxy(t, nodes[2], all)}
	live, _ := nodes[0].Mint(t, "demo")
	revoked, leaseID := nodes[0].Mint(t, "demo")
	nodes[0].MustCLI(t, "lease", "revoke", "-sync", leaseID)

	var served, unavailable, wrong, total atomic.Int64
	var wrongMu sync.Mutex
	var wrongs []string
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	client := &http.Client{Timeout: 10 * time.Second}
	call := func(p *harness.Proxy, tok string) (int, string) {
		req, _ := http.NewRequest("GET", p.URL+"/v1/customers", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := client.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := proxies[i%2]
			for n := 0; ctx.Err() == nil; n++ {
				tok, want := live, 200
				if n%10 == 9 {
					tok, want = revoked, 401
				}
				code, body := call(p, tok)
				total.Add(1)
				switch {
				case code == want:
					served.Add(1)
				case code == 503:
					unavailable.Add(1)
				default:
					wrong.Add(1)
					wrongMu.Lock()
					wrongs = append(wrongs, body)
					wrongMu.Unlock()
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	start := time.Now()
	time.Sleep(2 * time.Second)
	for _, i := range []int{1, 2, 0} { // standbys first, the leader last
		t0 := time.Now()
		nodes[i].RestartNode(t, 3*time.Second) // down long enough to matter
		// All three serve before the next goes down.
		for _, n := range nodes {
			servesWithin(t, n, 60*time.Second)
		}
		for j, p := range proxies {
			servesAgain(t, p, live, 60*time.Second, "proxy %d never served again after node %d restarted:\n%s", j, i+1, p.Out)
		}
		time.Sleep(2 * time.Second)
		t.Logf("node %d restarted in %v", i+1, time.Since(t0).Round(time.Millisecond))
	}
	stop()
	wg.Wait()
	pct := 100 * float64(served.Load()) / float64(total.Load())
	t.Logf("rolling restart over %v: %d requests, %d served as expected (%.1f%%), %d 503, %d wrong",
		time.Since(start).Round(time.Second), total.Load(), served.Load(), pct, unavailable.Load(), wrong.Load())
	if wrong.Load() != 0 {
		t.Fatalf("%d wrong answers, e.g. %q", wrong.Load(), wrongs[0])
	}
	if served.Load() == 0 {
		t.Fatalf("nothing served; the proxies' output:\n%s\n%s", proxies[0].Out, proxies[1].Out)
	}

	// A leader kill costs the proxies no more than the election: they serve
	// again as soon as (a probe interval after) a new leader is active.
	var leader *harness.Vault
	for _, n := range nodes {
		if n.Active() {
			leader = n
		}
	}
	if leader == nil {
		t.Fatal("no active node after the rolling restart")
	}
	leader.Crash()
	killed := time.Now()
	var elected time.Duration
	for elected == 0 {
		for _, n := range nodes {
			if n != leader && n.Active() {
				elected = time.Since(killed)
			}
		}
		if time.Since(killed) > 60*time.Second {
			t.Fatal("no new leader within 60s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i, p := range proxies {
		servesAgain(t, p, live, 60*time.Second, "proxy %d never served again after the leader was killed:\n%s", i, p.Out)
	}
	resumed := time.Since(killed)
	t.Logf("leader killed: a new leader after %v, both proxies served again after %v",
		elected.Round(time.Millisecond), resumed.Round(time.Millisecond))
	if resumed > elected+3*time.Second {
		t.Fatalf("the proxies served again %v after the election", resumed-elected)
	}
	// Each node has its health on /metrics. (Failovers are counted too, but
	// only when a call met a node down before a probe did, which the
	// timing decides: TestFailoverPastRefusedAndSealedNodes counts them.)
	for _, p := range proxies {
		m := p.Metrics(t)
		for _, n := range nodes {
			if !strings.Contains(m, `phantom_proxy_vault_node_healthy{node="`+n.Addr+`"}`) {
				t.Fatalf("/metrics lacks the health of %s:\n%s", n.Addr, m)
			}
		}
	}
}

func servesWithin(t *testing.T, v *harness.Vault, d time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(d); !v.Serving(); time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("node %s does not serve; its log:\n%s", v.Addr, v.Log)
		}
	}
}

// TestCallThatReachedEngineNotRepeated: the first node of the proxy's list
// sits behind a fault that lets a resolve call reach the engine and then
// drops the connection before the answer. With a num_uses=2 token, that
// call uses one use and fails closed (503); it is not repeated on the
// second node (which would spend the other use and answer 200). Then the
// token has exactly one use left.
func TestCallThatReachedEngineNotRepeated(t *testing.T) {
	nodes := harness.StartRaftCluster(t, 2)
	upstreamRoute(t, nodes[0], "demo")
	target, _ := url.Parse(nodes[0].Addr)
	rp := httputil.NewSingleHostReverseProxy(target)
	var dropping atomic.Bool
	fault := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !dropping.Load() || !strings.HasSuffix(r.URL.Path, "/resolve") {
			rp.ServeHTTP(w, r)
			return
		}
		rec := httptest.NewRecorder()
		rp.ServeHTTP(rec, r) // the engine acts on it
		if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
			conn.Close() // and the answer is lost
		}
	}))
	t.Cleanup(fault.Close)
	p := harness.StartProxy(t, nodes[0], "-vault-addr="+fault.URL+","+nodes[1].Addr)

	// A first call teaches the proxy that this Community Edition refuses
	// X-Vault-Forward, so the dropped call below is one the engine acts on.
	warm, _ := nodes[0].Mint(t, "demo")
	if code, body := p.Call(t, "GET", "/v1/customers", warm); code != 200 {
		t.Fatalf("warm-up: %d %s", code, body)
	}
	tok, _ := nodes[0].Mint(t, "demo", "num_uses=2")
	dropping.Store(true)
	if code, body := p.Call(t, "GET", "/v1/customers", tok); code != 503 {
		t.Fatalf("the call whose answer was lost got %d %s; want 503 (a 200 means it was repeated on another node)", code, body)
	}
	dropping.Store(false)
	if code, body := p.Call(t, "GET", "/v1/customers", tok); code != 200 {
		t.Fatalf("the token's second use got %d %s", code, body)
	}
	if code, body := p.Call(t, "GET", "/v1/customers", tok); code != 401 {
		t.Fatalf("a third call on a num_uses=2 token got %d %s", code, body)
	}
}
