package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/phantomvault/phantom/e2e/harness"
)

// soakToken is the test's ground truth about one phantom token.
type soakToken struct {
	token, leaseID string
	numUses        int
	renewable      bool

	mu          sync.Mutex
	expires     time.Time // only ever extended
	revokeStart time.Time
	revokeDone  time.Time
	allowed     int
}

// TestSoak drives sustained concurrent traffic through the real proxy while
// tokens are minted, renewed, revoked and expire, and checks every decision
// against the ground truth: no revoked, expired or used-up token is ever
// allowed, no valid one is ever denied, and the proxy's memory and goroutines
// do not grow. PHANTOM_SOAK sets the duration (default 30s; make test runs
// several minutes).
func TestSoak(t *testing.T) {
	duration := 30 * time.Second
	if s := os.Getenv("PHANTOM_SOAK"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("PHANTOM_SOAK=%q: %v", s, err)
		}
		duration = d
	}
	v := harness.StartDevVault(t)
	upstreamRoute(t, v, "soak")
	p := harness.StartProxy(t, v, "-log-level=warn")

	cfg := api.DefaultConfig()
	cfg.Address = v.Addr
	vc, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	vc.SetToken(v.Token)

	var (
		poolMu                                                         sync.Mutex
		pool                                                           []*soakToken
		wrong                                                          []string
		wrongMu                                                        sync.Mutex
		minted, revoked, renewed, requests, allowedN, deniedN, errorsN atomic.Int64
	)
	report := func(format string, args ...any) {
		wrongMu.Lock()
		if len(wrong) < 20 {
			wrong = append(wrong, fmt.Sprintf(format, args...))
		}
		wrongMu.Unlock()
	}
	mint := func(ttl string, uses int) {
		data := map[string]any{"ttl": ttl}
		if uses > 0 {
			data["num_uses"] = uses
		}
		s, err := vc.Logical().Write("phantom/token/soak", data)
		if err != nil {
			report("mint: %v", err)
			return
		}
		st := &soakToken{token: s.Data["token"].(string), leaseID: s.LeaseID, numUses: uses, renewable: ttl == "60s" && uses == 0,
			expires: time.Now().Add(time.Duration(s.LeaseDuration) * time.Second)}
		minted.Add(1)
		poolMu.Lock()
		pool = append(pool, st)
		if len(pool) > 60 {
			pool = pool[1:]
		}
		poolMu.Unlock()
	}
	pick := func() *soakToken {
		poolMu.Lock()
		defer poolMu.Unlock()
		if len(pool) == 0 {
			return nil
		}
		return pool[rand.IntN(len(pool))]
	}

	ctx, cancel := context.WithTimeout(context.Background(), duration)
	defer cancel()
	var wg sync.WaitGroup
	// The lifecycle: mint (long, short-lived, limited), revoke, renew.
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for n := 0; ctx.Err() == nil; n++ {
			switch n % 3 {
			case 0:
				mint("60s", 0)
			case 1:
				mint("3s", 0) // expires while in use
			case 2:
				mint("60s", 5)
			}
			if n%5 == 4 {
				if st := pick(); st != nil && st.renewable {
					st.mu.Lock()
					already := !st.revokeStart.IsZero()
					if !already {
						st.revokeStart = time.Now()
					}
					st.mu.Unlock()
					if !already {
						if err := vc.Sys().RevokeWithOptions(&api.RevokeOptions{LeaseID: st.leaseID, Sync: true}); err != nil {
							report("revoke: %v", err)
						}
						st.mu.Lock()
						st.revokeDone = time.Now()
						st.mu.Unlock()
						revoked.Add(1)
					}
				}
			}
			if n%7 == 6 {
				if st := pick(); st != nil && st.renewable {
					st.mu.Lock()
					live := st.revokeStart.IsZero()
					st.mu.Unlock()
					if live {
						if s, err := vc.Sys().Renew(st.leaseID, 60); err == nil {
							st.mu.Lock()
							if e := time.Now().Add(time.Duration(s.LeaseDuration) * time.Second); e.After(st.expires) {
								st.expires = e
							}
							st.mu.Unlock()
							renewed.Add(1)
						}
					}
				}
			}
			select {
			case <-ctx.Done():
			case <-tick.C:
			}
		}
	}()

	// The agents.
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				st := pick()
				if st == nil {
					time.Sleep(10 * time.Millisecond)
					continue
				}
				req, _ := http.NewRequest("GET", p.URL+"/v1/customers", nil)
				req.Header.Set("Authorization", "Bearer "+st.token)
				start := time.Now()
				resp, err := client.Do(req)
				end := time.Now()
				requests.Add(1)
				if err != nil {
					errorsN.Add(1)
					continue
				}
				// Read to the end so the connection is reused, as an SDK's is: a
				// new connection per request would fill the port range with
				// TIME_WAIT and starve later tests of loopback ports.
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				st.mu.Lock()
				revokedBefore := !st.revokeDone.IsZero() && start.After(st.revokeDone)
				revokeNotYet := st.revokeStart.IsZero() || end.Before(st.revokeStart)
				// expires_at has whole seconds and the clocks differ by a
				// request's latency: allow a second and a half either way.
				expiredBefore := start.After(st.expires.Add(1500 * time.Millisecond))
				validThroughout := end.Before(st.expires.Add(-1500 * time.Millisecond))
				switch resp.StatusCode {
				case 200:
					allowedN.Add(1)
					st.allowed++
					switch {
					case revokedBefore:
						report("a revoked token was allowed")
					case expiredBefore:
						report("an expired token was allowed (%v after expiry)", start.Sub(st.expires))
					case st.numUses > 0 && st.allowed > st.numUses:
						report("a token with num_uses=%d was allowed %d times", st.numUses, st.allowed)
					}
				case 401, 403:
					deniedN.Add(1)
					if st.numUses == 0 && revokeNotYet && validThroughout {
						report("a valid token was denied with %d", resp.StatusCode)
					}
				default:
					errorsN.Add(1)
				}
				st.mu.Unlock()
			}
		}()
	}

	// The proxy's memory and goroutines, every 5 s.
	type sample struct{ rssMiB, goroutines float64 }
	var samples []sample
	ticker := time.NewTicker(5 * time.Second)
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-ticker.C:
			rss, g := proxyRuntime(t, p)
			samples = append(samples, sample{rss / (1 << 20), g})
		}
	}
	ticker.Stop()
	wg.Wait()

	var curve []string
	for _, s := range samples {
		curve = append(curve, fmt.Sprintf("%.1fMiB/%.0fg", s.rssMiB, s.goroutines))
	}
	t.Logf("%v: %d requests (%d allowed, %d denied, %d errors), %d tokens minted, %d revoked, %d renewed; proxy RSS/goroutines every 5s: %s",
		duration, requests.Load(), allowedN.Load(), deniedN.Load(), errorsN.Load(), minted.Load(), revoked.Load(), renewed.Load(), strings.Join(curve, " "))
	for _, w := range wrong {
		t.Error(w)
	}
	if errorsN.Load() != 0 {
		t.Errorf("%d requests failed outright", errorsN.Load())
	}
	if allowedN.Load() == 0 || deniedN.Load() == 0 || revoked.Load() == 0 {
		t.Fatal("the soak exercised too little to judge")
	}
	if len(samples) >= 4 {
		warm, last := samples[1], samples[len(samples)-1]
		if last.goroutines > warm.goroutines+50 {
			t.Errorf("goroutines grew from %.0f to %.0f", warm.goroutines, last.goroutines)
		}
		if last.rssMiB > warm.rssMiB*1.5+20 {
			t.Errorf("RSS grew from %.1f to %.1f MiB", warm.rssMiB, last.rssMiB)
		}
	}
}

// proxyRuntime reads the proxy's resident memory and goroutine count from
// its /metrics.
func proxyRuntime(t *testing.T, p *harness.Proxy) (rss, goroutines float64) {
	t.Helper()
	resp, err := http.Get(p.Admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}
		val, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "process_resident_memory_bytes":
			rss = val
		case "go_goroutines":
			goroutines = val
		}
	}
	return rss, goroutines
}
