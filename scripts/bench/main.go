// Command bench measures what Phantom costs an agent, against the
// alternatives, on one machine in one run. scripts/bench.sh starts the stack
// (a Vault dev server with the plugin, phantom-proxy, the demo API) and runs
// it; on its own it needs the addresses and a token in flags.
//
// For each concurrency it drives, for a fixed time, with keep-alive
// connections: (1) the API directly, (2) a bare httputil.ReverseProxy that
// injects a fixed key, in a process of its own, (3) phantom-proxy, which
// resolves every request through Vault. It also measures resolve and mint
// straight against Vault, one large response through each target (the
// scrubber's line rate) and samples phantom-proxy's memory.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

type config struct {
	upstream, proxy, vaultAddr, vaultToken, resolveToken, token, realKey, route, path string
	proxyPID                                                                          int
	duration, memoryRun                                                               time.Duration
	rounds, bulkMiB, bulkRounds                                                       int
	conns                                                                             []int
	jsonOut                                                                           string
	forward                                                                           forwardConfig // forward.go
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
	ForwardAddedMS   float64            `json:"forward_added_median_ms_at_1,omitempty"` // the tunnel over reverse mode, same TLS upstream
	AddedFloorMS     float64            `json:"phantom_added_floor_ms_at_1,omitempty"`  // the bare proxy's added latency plus one resolve
	ResolvePerSecond float64            `json:"vault_resolve_per_second"`
	BatchedPerSecond float64            `json:"vault_batched_decisions_per_second"`
	Floor            *floor             `json:"vault_latency_floor,omitempty"`
	MintPerSecond    float64            `json:"vault_mint_per_second"`
	ProxyPeakRSSMiB  float64            `json:"proxy_peak_rss_mib"`
	ProxyRSSMiB      []float64          `json:"proxy_rss_mib_samples"`
	MemoryRun        *memoryRun         `json:"memory_run,omitempty"`
	Bulk             *bulkResult        `json:"bulk_response,omitempty"`
}

func main() {
	var c config
	var conns string
	flag.StringVar(&c.upstream, "upstream", "", "the API, directly")
	flag.StringVar(&c.proxy, "proxy", "", "phantom-proxy's base URL")
	flag.StringVar(&c.vaultAddr, "vault-addr", os.Getenv("VAULT_ADDR"), "Vault address")
	flag.StringVar(&c.vaultToken, "vault-token", os.Getenv("VAULT_TOKEN"), "Vault token that may mint")
	flag.StringVar(&c.resolveToken, "resolve-token", "", "Vault token with the proxy's policy, to resolve as phantom-proxy does")
	flag.StringVar(&c.token, "token", "", "a phantom token for -route")
	flag.StringVar(&c.realKey, "real-key-env", "DEMO_UPSTREAM_KEY", "environment variable holding the API's real key")
	flag.StringVar(&c.route, "route", "demo-api", "route the token belongs to")
	flag.StringVar(&c.path, "path", "/v1/customers/cus_123", "request path")
	flag.IntVar(&c.proxyPID, "proxy-pid", 0, "phantom-proxy's process id, for its memory")
	flag.DurationVar(&c.duration, "duration", 5*time.Second, "how long each target is driven at each concurrency")
	flag.IntVar(&c.rounds, "rounds", 5, "slices the duration is cut into, the targets taking turns")
	flag.StringVar(&conns, "conns", "1,16,64", "comma-separated concurrency levels")
	flag.StringVar(&c.jsonOut, "json", "bench.json", "where to write the figures as JSON")
	flag.DurationVar(&c.memoryRun, "memory-run", 0, "after the runs, drive phantom-proxy at the highest concurrency this long and record its memory (e.g. 10m)")
	flag.IntVar(&c.bulkMiB, "bulk-mib", 256, "size of the large response downloaded through each target, in MiB (0: skip)")
	flag.IntVar(&c.bulkRounds, "bulk-rounds", 3, "downloads of the large response per target")
	c.forward.flags()
	bareProxy := flag.Bool("bare-proxy", false, "serve the bare reverse proxy to -upstream and print its URL (the bench starts itself so)")
	bulkUpstream := flag.Bool("bulk-upstream", false, "serve the large responses and print the URL (the bench starts itself so)")
	flag.Parse()
	if *bareProxy {
		serveBareProxy(c.upstream, os.Getenv(c.realKey))
		return
	}
	if *bulkUpstream {
		serveBulkUpstream()
		return
	}
	for _, s := range strings.Split(conns, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			log.Fatalf("bench: bad -conns %q", conns)
		}
		c.conns = append(c.conns, n)
	}
	if c.rounds < 1 {
		log.Fatal("bench: -rounds must be at least 1")
	}
	key := os.Getenv(c.realKey)
	if c.upstream == "" || c.proxy == "" || c.token == "" || key == "" {
		log.Fatal("bench: -upstream, -proxy, -token and the real key in $" + c.realKey + " are required (scripts/bench.sh sets them)")
	}

	bare, stopBare := startBareProxy(c.upstream, c.realKey)
	defer stopBare()
	rss := newRSSSampler(c.proxyPID, time.Second)
	defer rss.stop()

	r := report{Machine: machine(), Duration: c.duration.String(), Ratios: map[string]float64{}}
	targets := []target{
		{"direct", c.upstream, "Bearer " + key, nil},
		{"bare-proxy", bare, "", nil},
		{"phantom", c.proxy, "Bearer " + c.token, nil},
	}
	if c.forward.on() {
		// Reverse mode and the tunnel to the same TLS upstream, side by side.
		targets = append(targets,
			target{"phantom-tls", c.proxy, "Bearer " + c.forward.token, nil},
			target{"forward", c.forward.target, "", c.forward.transport()})
	}
	targets = append(targets, limitsTargets(c.proxy)...) // limits.go
	targets = append(targets, sigv4Targets(c.proxy)...)  // sigv4.go
	byKey := map[string]result{}
	for _, n := range c.conns {
		// The targets take turns in short slices, so a noisy neighbour
		// slows them alike rather than whichever ran at the time.
		runs := make([]run, len(targets))
		slice := c.duration / time.Duration(c.rounds)
		for range c.rounds {
			for i, tg := range targets {
				runs[i].add(tg.base+c.path, tg.auth, n, slice, tg.transport)
			}
		}
		for i, tg := range targets {
			res := runs[i].result(n)
			res.Target = tg.name
			r.Results = append(r.Results, res)
			byKey[fmt.Sprintf("%s/%d", tg.name, n)] = res
			log.Printf("%-10s %3d conns: %8.0f req/s  p50 %6.3f ms  p99 %6.3f ms  errors %d", tg.name, n, res.RPS, res.P50ms, res.P99ms, res.Errors)
		}
		p, d, b := byKey[fmt.Sprintf("phantom/%d", n)], byKey[fmt.Sprintf("direct/%d", n)], byKey[fmt.Sprintf("bare-proxy/%d", n)]
		r.Ratios[fmt.Sprintf("phantom/direct@%d", n)] = round(p.RPS / d.RPS)
		r.Ratios[fmt.Sprintf("phantom/bare-proxy@%d", n)] = round(p.RPS / b.RPS)
		if l, ok := byKey[fmt.Sprintf("phantom-limits/%d", n)]; ok {
			r.Ratios[fmt.Sprintf("phantom-limits/phantom@%d", n)] = round(l.RPS / p.RPS)
		}
		if s, ok := byKey[fmt.Sprintf("phantom-sigv4/%d", n)]; ok {
			r.Ratios[fmt.Sprintf("phantom-sigv4/phantom@%d", n)] = round(s.RPS / p.RPS)
		}
		if f, ok := byKey[fmt.Sprintf("forward/%d", n)]; ok {
			r.Ratios[fmt.Sprintf("forward/phantom-tls@%d", n)] = round(f.RPS / byKey[fmt.Sprintf("phantom-tls/%d", n)].RPS)
		}
	}
	if f, ok := byKey["forward/1"]; ok {
		r.ForwardAddedMS = round(f.P50ms - byKey["phantom-tls/1"].P50ms)
	}
	if p, ok := byKey["phantom/1"]; ok {
		r.AddedMedianMS = round(p.P50ms - byKey["direct/1"].P50ms)
	}
	if c.vaultAddr != "" && c.vaultToken != "" && c.resolveToken != "" {
		r.ResolvePerSecond, r.BatchedPerSecond, r.MintPerSecond = vaultRates(c, 16, c.duration)
		f := vaultFloor(c)
		r.Floor = &f
		if b, ok := byKey["bare-proxy/1"]; ok && f.ResolveMS > 0 {
			r.AddedFloorMS = round(b.P50ms - byKey["direct/1"].P50ms + f.ResolveMS)
		}
	}
	if c.bulkMiB > 0 && c.vaultAddr != "" && c.vaultToken != "" {
		r.Bulk = runBulk(c, c.bulkMiB, max(c.bulkRounds, 1))
	}
	r.ProxyPeakRSSMiB, r.ProxyRSSMiB = rss.stop()
	if c.memoryRun > 0 {
		r.MemoryRun = runMemory(c.proxy+c.path, "Bearer "+c.token, slices.Max(c.conns), c.memoryRun, c.proxyPID)
	}
	printReport(r)
	out, _ := json.MarshalIndent(r, "", "  ")
	if err := os.WriteFile(c.jsonOut, append(out, '\n'), 0o644); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("\nfigures written to %s\n", c.jsonOut)
}

// target is one way to reach the API, driven in turn with the others.
type target struct {
	name, base, auth string
	transport        func(n int) *http.Transport // nil: plain keep-alive
}

// run accumulates one target's slices of load.
type run struct {
	ok, failed int64
	took       time.Duration
	lat        []time.Duration
}

// add sends GETs over n keep-alive connections for d and records them.
func (r *run) add(target, auth string, n int, d time.Duration, transport func(n int) *http.Transport) {
	lat := make([][]time.Duration, n)
	ok, failed := hammerWith(target, auth, n, d, transport, func(worker int, took time.Duration) {
		lat[worker] = append(lat[worker], took)
	})
	r.ok, r.failed, r.took = r.ok+ok, r.failed+failed, r.took+d
	r.lat = append(r.lat, slices.Concat(lat...)...)
}

func (r *run) result(n int) result {
	slices.Sort(r.lat)
	return result{
		Connections: n, Requests: r.ok, Errors: r.failed,
		RPS: round(float64(r.ok) / r.took.Seconds()), P50ms: ms(quantile(r.lat, 0.50)), P99ms: ms(quantile(r.lat, 0.99)),
	}
}

// hammer sends GETs from n workers, each over its own keep-alive
// connection, for d, and passes each success's latency to done.
func hammer(target, auth string, n int, d time.Duration, done func(worker int, took time.Duration)) (ok, failed int64) {
	return hammerWith(target, auth, n, d, nil, done)
}

// hammerWith is hammer over the transport newTransport makes (through the
// forward proxy, say); nil is a plain keep-alive transport.
func hammerWith(target, auth string, n int, d time.Duration, newTransport func(n int) *http.Transport, done func(worker int, took time.Duration)) (ok, failed int64) {
	tr := &http.Transport{MaxIdleConns: n, MaxIdleConnsPerHost: n, MaxConnsPerHost: n, DisableCompression: true}
	if newTransport != nil {
		tr = newTransport(n)
	}
	client := &http.Client{Transport: tr}
	defer client.CloseIdleConnections()
	var okN, failedN atomic.Int64
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
					failedN.Add(1)
					continue
				}
				done(i, time.Since(start))
				okN.Add(1)
			}
		}()
	}
	wg.Wait()
	return okN.Load(), failedN.Load()
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
	if r.ForwardAddedMS != 0 {
		fmt.Printf("median latency the forward-proxy tunnel adds over reverse mode (same TLS upstream) at 1 connection: %.3f ms\n", r.ForwardAddedMS)
	}
	fmt.Printf("resolve straight against Vault: %.0f /s one per call, %.0f /s in batches of 16; mint: %.0f /s\n",
		r.ResolvePerSecond, r.BatchedPerSecond, r.MintPerSecond)
	if f := r.Floor; f != nil {
		fmt.Printf("one call at a time to Vault, p50: sys/health %.3f ms; a call the ACL refuses %.3f ms; resolve %.3f ms, of which Vault and its hop to the plugin %.3f ms (a malformed token)\n",
			f.HealthMS, f.RefusedMS, f.ResolveMS, f.NoopMS)
	}
	if r.AddedFloorMS > 0 {
		fmt.Printf("floor of what phantom can add at 1 connection (the bare proxy's added latency plus one resolve): %.3f ms\n", r.AddedFloorMS)
	}
	if b := r.Bulk; b != nil {
		for _, kind := range bulkBodyKinds {
			k := b.Bodies[kind]
			fmt.Printf("one %d MiB %s response, median of %d: direct %.3f GB/s, bare proxy %.3f GB/s, phantom %.3f GB/s; phantom/bare proxy %.3f\n",
				b.MiB, kind, b.Rounds, k.GBps["direct"], k.GBps["bare-proxy"], k.GBps["phantom"], k.Ratio)
		}
	}
	fmt.Printf("phantom-proxy peak RSS: %.1f MiB\n", r.ProxyPeakRSSMiB)
	if m := r.MemoryRun; m != nil {
		fmt.Printf("memory run: %d conns for %s, %.0f req/s, %d errors; RSS MiB every %s:\n ",
			m.Connections, m.Duration, m.RPS, m.Errors, m.Interval)
		for _, s := range m.RSSMiB {
			fmt.Printf(" %.1f", s)
		}
		fmt.Println()
	}
	fmt.Printf("machine: %v\n", r.Machine)
}
