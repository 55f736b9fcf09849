package e2e

import (
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/phantomvault/phantom/e2e/harness"
)

// TestHAFailover runs a 3-node Vault cluster with integrated Raft storage and
// two proxy replicas, each talking to a standby. Tokens minted on one node
// resolve through any node; num_uses stays exact with both proxies hammering
// one token; after the leader is killed the proxies serve again once a new
// leader is elected, and a token revoked just before the failover stays
// revoked.
func TestHAFailover(t *testing.T) {
	nodes := harness.StartRaftCluster(t, 3)
	leader := nodes[0]
	upstreamRoute(t, leader, "demo")
	proxies := []*harness.Proxy{harness.StartProxy(t, nodes[1]), harness.StartProxy(t, nodes[2])}

	tok, _ := nodes[1].Mint(t, "demo") // minted through a standby
	for i, p := range proxies {
		if code, body := p.Call(t, "GET", "/v1/customers", tok); code != 200 {
			t.Fatalf("proxy %d: %d %s", i, code, body)
		}
	}

	// num_uses: 2 proxies x 15 concurrent requests on a 20-use token.
	limited, _ := leader.Mint(t, "demo", "num_uses=20")
	var allowed, refused atomic.Int64
	var wg sync.WaitGroup
	for _, p := range proxies {
		for range 15 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				switch code, _ := p.Call(t, "GET", "/v1/customers", limited); code {
				case 200:
					allowed.Add(1)
				case 401:
					refused.Add(1)
				}
			}()
		}
	}
	wg.Wait()
	if allowed.Load() != 20 || refused.Load() != 10 {
		t.Fatalf("num_uses=20 across two proxies: %d allowed, %d refused", allowed.Load(), refused.Load())
	}

	revoked, leaseID := nodes[2].Mint(t, "demo")
	leader.MustCLI(t, "lease", "revoke", "-sync", leaseID)
	leader.Crash() // the active node dies: SIGKILL, no step-down
	start := time.Now()
	for i, p := range proxies {
		servesAgain(t, p, tok, 90*time.Second, "proxy %d never served again after the failover:\n%s", i, p.Out)
	}
	t.Logf("both proxies served again %v after the leader was killed", time.Since(start).Round(time.Millisecond))
	for i, p := range proxies {
		if code, body := p.Call(t, "GET", "/v1/customers", revoked); code != 401 || !strings.Contains(body, "revoked") {
			t.Fatalf("proxy %d: the token revoked before the failover got %d %s", i, code, body)
		}
	}
	// The new leader mints, and both proxies honour it.
	fresh, _ := nodes[1].Mint(t, "demo")
	for i, p := range proxies {
		if code, _ := p.Call(t, "GET", "/v1/customers", fresh); code != 200 {
			t.Fatalf("proxy %d: a token minted after the failover got %d", i, code)
		}
	}
}
