// Command bench measures what Phantom costs an agent, against the
// alternatives, on one machine in one run. scripts/bench.sh starts the stack
// (a Vault dev server with the plugin, phantom-proxy, the demo API) and runs
// it; on its own it needs the addresses and a token in flags.
//
// For each concurrency it drives, for a fixed time, with keep-alive
// connections: (1) the API directly, (2) a bare httputil.ReverseProxy that
// injects a fixed key, (3) phantom-proxy, which resolves every request
// through Vault. It also measures resolve and mint straight against Vault and
// samples phantom-proxy's memory.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"
)

type config struct {
	upstream, proxy, vaultAddr, vaultToken, token, realKey, route, path string
	proxyPID                                                            int
	duration                                                            time.Duration
	conns                                                               []int
	jsonOut                                                             string
}

type result struct {
	Target      string  `json:"target"`
	Connections int     `json:"connections"`
	Requests    int64   `json:"requests"`
	Errors      int64   `json:"errors"`
	RPS         float64 `json:"requests_per_second"`
	P50ms       float64 `json:"p50_ms"`
	P99ms       float64 `json:"p99_ms"`
}

type report struct {
	Machine          map[string]string  `json:"machine"`
	Duration         string             `json:"duration_per_run"`
	Results          []result           `json:"results"`
	Ratios           map[string]float64 `json:"ratios"`
	AddedMedianMS    float64            `json:"phantom_added_median_ms_at_1"`
	ResolvePerSecond float64            `json:"vault_resolve_per_second"`
	MintPerSecond    float64            `json:"vault_mint_per_second"`
	ProxyPeakRSSMiB  float64            `json:"proxy_peak_rss_mib"`
	ProxyRSSMiB      []float64          `json:"proxy_rss_mib_samples"`
}

func main() {
	var c config
	var conns string
	flag.StringVar(&c.upstream, "upstream", "", "the API, directly")
	flag.StringVar(&c.proxy, "proxy", "", "phantom-proxy's base URL")
	flag.StringVar(&c.vaultAddr, "vault-addr", os.Getenv("VAULT_ADDR"), "Vault address")
	flag.StringVar(&c.vaultToken, "vault-token", os.Getenv("VAULT_TOKEN"), "Vault token that may mint and resolve")
	flag.StringVar(&c.token, "token", "", "a phantom token for -route")
	flag.StringVar(&c.realKey, "real-key-env", "DEMO_UPSTREAM_KEY", "environment variable holding the API's real key")
	flag.StringVar(&c.route, "route", "demo-api", "route the token belongs to")
	flag.StringVar(&c.path, "path", "/v1/customers/cus_123", "request path")
	flag.IntVar(&c.proxyPID, "proxy-pid", 0, "phantom-proxy's process id, for its memory")
	flag.DurationVar(&c.duration, "duration", 5*time.Second, "how long each run drives traffic")
	flag.StringVar(&conns, "conns", "1,16,64", "comma-separated concurrency levels")
	flag.StringVar(&c.jsonOut, "json", "bench.json", "where to write the figures as JSON")
	flag.Parse()
	for _, s := range strings.Split(conns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			log.Fatalf("bench: bad -conns %q", conns)
		}
		c.conns = append(c.conns, n)
	}
	key := os.Getenv(c.realKey)
	if c.upstream == "" || c.proxy == "" || c.token == "" || key == "" {
		log.Fatal("bench: -upstream, -proxy, -token and the real key in $" + c.realKey + " are required (scripts/bench.sh sets them)")
	}

	bare, stopBare := startBareProxy(c.upstream, key)
	defer stopBare()
	rss := newRSSSampler(c.proxyPID)
	defer rss.stop()

	r := report{Machine: machine(), Duration: c.duration.String(), Ratios: map[string]float64{}}
	targets := []struct{ name, base, auth string }{
		{"direct", c.upstream, "Bearer " + key},
		{"bare-proxy", bare, ""},
		{"phantom", c.proxy, "Bearer " + c.token},
	}
	byKey := map[string]result{}
	for _, n := range c.conns {
		for _, tg := range targets {
			res := drive(tg.base+c.path, tg.auth, n, c.duration)
			res.Target = tg.name
			r.Results = append(r.Results, res)
			byKey[fmt.Sprintf("%s/%d", tg.name, n)] = res
			log.Printf("%-10s %3d conns: %8.0f req/s  p50 %6.3f ms  p99 %6.3f ms  errors %d", tg.name, n, res.RPS, res.P50ms, res.P99ms, res.Errors)
		}
		p, d, b := byKey[fmt.Sprintf("phantom/%d", n)], byKey[fmt.Sprintf("direct/%d", n)], byKey[fmt.Sprintf("bare-proxy/%d", n)]
		r.Ratios[fmt.Sprintf("phantom/direct@%d", n)] = round(p.RPS / d.RPS)
		r.Ratios[fmt.Sprintf("phantom/bare-proxy@%d", n)] = round(p.RPS / b.RPS)
	}
	if p, ok := byKey["phantom/1"]; ok {
		r.AddedMedianMS = round(p.P50ms - byKey["direct/1"].P50ms)
	}
	if c.vaultAddr != "" && c.vaultToken != "" {
		r.ResolvePerSecond, r.MintPerSecond = vaultRates(c, 16, c.duration)
	}
	r.ProxyPeakRSSMiB, r.ProxyRSSMiB = rss.stop()
	printReport(r)
	out, _ := json.MarshalIndent(r, "", "  ")
	if err := os.WriteFile(c.jsonOut, append(out, '\n'), 0o644); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("\nfigures written to %s\n", c.jsonOut)
}

// drive sends GETs over n keep-alive connections for d and measures them.
func drive(target, auth string, n int, d time.Duration) result {
	client := &http.Client{Transport: &http.Transport{
		MaxIdleConns: n, MaxIdleConnsPerHost: n, MaxConnsPerHost: n, DisableCompression: true,
	}}
	defer client.CloseIdleConnections()
	var ok, failed atomic.Int64
	lat := make([][]time.Duration, n)
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, target, nil)
				if auth != "" {
					req.Header.Set("Authorization", auth)
				}
				start := time.Now()
				resp, err := client.Do(req)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if err != nil || resp.StatusCode != http.StatusOK {
					failed.Add(1)
					continue
				}
				lat[i] = append(lat[i], time.Since(start))
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	all := slices.Concat(lat...)
	slices.Sort(all)
	return result{
		Connections: n, Requests: ok.Load(), Errors: failed.Load(),
		RPS: round(float64(ok.Load()) / d.Seconds()), P50ms: ms(quantile(all, 0.50)), P99ms: ms(quantile(all, 0.99)),
	}
}

// startBareProxy is what any reverse proxy costs: no Vault, a fixed key.
func startBareProxy(upstream, key string) (string, func()) {
	u, err := url.Parse(upstream)
	if err != nil {
		log.Fatal(err)
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 256
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Header.Set("Authorization", "Bearer "+key)
		},
		Transport: t,
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: rp}
	go srv.Serve(ln)
	return "http://" + ln.Addr().String(), func() { srv.Close() }
}

// vaultRates measures resolve and mint straight against Vault with n workers.
func vaultRates(c config, n int, d time.Duration) (resolve, mint float64) {
	cfg := api.DefaultConfig()
	cfg.Address = c.vaultAddr
	cfg.MaxRetries = 0
	if t, ok := cfg.HttpClient.Transport.(*http.Transport); ok {
		t.MaxIdleConnsPerHost = n
	}
	client, err := api.NewClient(cfg)
	if err != nil {
		log.Fatal(err)
	}
	client.SetToken(c.vaultToken)
	rate := func(name string, op func() error) float64 {
		var count, failed atomic.Int64
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		var wg sync.WaitGroup
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					if op() != nil {
						failed.Add(1)
						continue
					}
					count.Add(1)
				}
			}()
		}
		wg.Wait()
		r := round(float64(count.Load()) / d.Seconds())
		log.Printf("vault %-7s %d workers: %8.0f /s  errors %d", name, n, r, failed.Load())
		return r
	}
	resolveData := map[string]any{"token": c.token, "method": "GET", "path": c.path, "client_ip": "127.0.0.1"}
	resolve = rate("resolve", func() error {
		s, err := client.Logical().Write("phantom/resolve", resolveData)
		if err == nil && s.Data["allowed"] != true {
			err = fmt.Errorf("denied: %v", s.Data["reason"])
		}
		return err
	})
	mint = rate("mint", func() error {
		s, err := client.Logical().Read("phantom/token/" + c.route)
		if err == nil && s.LeaseID != "" {
			// Leave no thousands of leases behind.
			go client.Sys().Revoke(s.LeaseID)
		}
		return err
	})
	return resolve, mint
}

func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]
}

func ms(d time.Duration) float64 { return round(float64(d.Microseconds()) / 1000) }
func round(f float64) float64    { return float64(int64(f*1000+0.5)) / 1000 }

func printReport(r report) {
	fmt.Printf("\n%-11s %5s %10s %9s %9s %7s\n", "target", "conns", "req/s", "p50 ms", "p99 ms", "errors")
	for _, res := range r.Results {
		fmt.Printf("%-11s %5d %10.0f %9.3f %9.3f %7d\n", res.Target, res.Connections, res.RPS, res.P50ms, res.P99ms, res.Errors)
	}
	fmt.Println()
	keys := make([]string, 0, len(r.Ratios))
	for k := range r.Ratios {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		fmt.Printf("ratio %-24s %6.3f\n", k, r.Ratios[k])
	}
	fmt.Printf("median latency phantom adds over direct at 1 connection: %.3f ms\n", r.AddedMedianMS)
	fmt.Printf("resolve straight against Vault: %.0f /s; mint: %.0f /s\n", r.ResolvePerSecond, r.MintPerSecond)
	fmt.Printf("phantom-proxy peak RSS: %.1f MiB\n", r.ProxyPeakRSSMiB)
	fmt.Printf("machine: %v\n", r.Machine)
}
