package e2e

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phantomvault/phantom/e2e/harness"
)

// TestRevocationUnderLoad: with 32 agents' requests in flight and the proxy
// batching its resolves, every request sent after `vault lease revoke -sync`
// returned is refused, none forwarded. Batching and the engine's caches may
// make resolves cheaper; they may not make a revocation late.
func TestRevocationUnderLoad(t *testing.T) {
	v := harness.StartDevVault(t)
	v.Bootstrap(t)
	upstreamRoute(t, v, "load")
	p := harness.StartProxy(t, v)
	tok, leaseID := v.Mint(t, "load")

	type call struct {
		start, end time.Time
		status     int
	}
	var mu sync.Mutex
	var calls []call
	stop := make(chan struct{})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32}, Timeout: 10 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("GET", p.URL+"/v1/customers", nil)
				req.Header.Set("Authorization", "Bearer "+tok)
				start := time.Now()
				status := 0
				if resp, err := client.Do(req); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					status = resp.StatusCode
				}
				mu.Lock()
				calls = append(calls, call{start, time.Now(), status})
				mu.Unlock()
			}
		}()
	}
	time.Sleep(1500 * time.Millisecond)
	revokeStart := time.Now()
	v.MustCLI(t, "lease", "revoke", "-sync", leaseID)
	revoked := time.Now()
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()

	var before, after, late int
	for _, c := range calls {
		switch {
		case c.end.Before(revokeStart):
			before++
			if c.status != http.StatusOK {
				t.Errorf("a request answered before the revocation began got %d", c.status)
			}
		case c.start.After(revoked):
			after++
			if c.status != http.StatusUnauthorized {
				late++
			}
		}
	}
	if late > 0 {
		t.Fatalf("%d of %d requests sent after the revocation returned were not refused", late, after)
	}
	if before < 100 || after < 100 {
		t.Fatalf("too little load to show anything: %d requests answered before the revocation, %d sent after", before, after)
	}
	// The proxy did batch: more requests resolved than calls made.
	size, calls2 := metric(t, p, "phantom_proxy_vault_batch_size_sum"), metric(t, p, "phantom_proxy_vault_batch_size_count")
	if size <= calls2 {
		t.Fatalf("no batching under load: %v requests in %v calls", size, calls2)
	}
	t.Logf("%d requests answered before the revocation (all 200), %d sent after it (all 401); %.0f resolves in %.0f Vault calls",
		before, after, size, calls2)
}

// metric reads one metric from the proxy's /metrics, adding up its series
// when it has labels.
func metric(t *testing.T, p *harness.Proxy, name string) float64 {
	t.Helper()
	sum, found := 0.0, false
	for line := range strings.Lines(p.Metrics(t)) {
		rest, ok := strings.CutPrefix(line, name)
		if !ok || !(strings.HasPrefix(rest, " ") || strings.HasPrefix(rest, "{")) {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(rest[strings.LastIndexByte(rest, ' '):]), 64)
		if err != nil {
			t.Fatal(err)
		}
		sum, found = sum+f, true
	}
	if !found {
		t.Fatalf("%s not in /metrics", name)
	}
	return sum
}
