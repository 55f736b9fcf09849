package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
)

// bulkResult is the throughput of one large response through each target:
// what the response scrubber costs when it must look at every byte.
type bulkResult struct {
	MiB    int                `json:"mib"`
	Rounds int                `json:"rounds"`
	GBps   map[string]float64 `json:"gb_per_second"` // median over rounds, 1 GB = 1e9 bytes
	Ratio  float64            `json:"phantom_over_bare_proxy"`
}

const (
	bulkRoute  = "bench-bulk"
	bulkKeyEnv = "PHANTOM_BENCH_BULK_KEY"
)

// runBulk serves an mib MiB JSON-lines body from a process of its own and
// downloads it directly, through a bare proxy and through phantom-proxy,
// rounds times each, the targets taking turns. The bulk route's credential
// looks like an AWS secret key ('/' and '+' in it), so phantom-proxy
// scrubs with its full set of forms.
func runBulk(c config, mib, rounds int) *bulkResult {
	upstream, stopUpstream := startChild("bulk upstream", "-bulk-upstream")
	defer stopUpstream()

	key := awsStyleKey()
	os.Setenv(bulkKeyEnv, key)
	bare, stopBare := startBareProxy(upstream, bulkKeyEnv)
	defer stopBare()

	cfg := api.DefaultConfig()
	cfg.Address = c.vaultAddr
	client, err := api.NewClient(cfg)
	if err != nil {
		log.Fatal(err)
	}
	client.SetToken(c.vaultToken)
	if _, err := client.Logical().Write("phantom/routes/"+bulkRoute, map[string]any{
		"upstream": upstream, "allowed_paths": "/bulk/**", "allowed_methods": "GET", "credential": key,
	}); err != nil {
		log.Fatalf("bulk: writing the route: %v", err)
	}
	defer client.Logical().Delete("phantom/routes/" + bulkRoute)
	s, err := client.Logical().Read("phantom/token/" + bulkRoute)
	if err != nil || s == nil {
		log.Fatalf("bulk: minting a token: %v", err)
	}
	defer client.Sys().Revoke(s.LeaseID)
	token, _ := s.Data["token"].(string)

	path := "/bulk/" + strconv.Itoa(mib)
	targets := []struct{ name, url, auth string }{
		{"direct", upstream + path, ""},
		{"bare-proxy", bare + path, ""},
		{"phantom", c.proxy + path, "Bearer " + token},
	}
	rates := map[string][]float64{}
	for range rounds {
		for _, tg := range targets {
			r, err := download(tg.url, tg.auth, int64(mib)<<20)
			if err != nil {
				log.Fatalf("bulk %s: %v", tg.name, err)
			}
			rates[tg.name] = append(rates[tg.name], r)
		}
	}
	res := &bulkResult{MiB: mib, Rounds: rounds, GBps: map[string]float64{}}
	for name, rs := range rates {
		slices.Sort(rs)
		res.GBps[name] = round(rs[len(rs)/2] / 1e9)
		log.Printf("bulk %-10s %d MiB: %.3f GB/s (rounds: %v)", name, mib, res.GBps[name], gbps(rs))
	}
	res.Ratio = round(res.GBps["phantom"] / res.GBps["bare-proxy"])
	return res
}

func gbps(rs []float64) []float64 {
	out := make([]float64, len(rs))
	for i, r := range rs {
		out[i] = round(r / 1e9)
	}
	return out
}

// download GETs url, reads the whole body, checks its length and returns
// bytes per second.
func download(url, auth string, want int64) (float64, error) {
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	defer client.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	start := time.Now()
	resp, err := client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	took := time.Since(start)
	if err != nil {
		return 0, err
	}
	if resp.StatusCode != http.StatusOK || n != want {
		return 0, fmt.Errorf("status %d, %d bytes of %d", resp.StatusCode, n, want)
	}
	return float64(n) / took.Seconds(), nil
}

// awsStyleKey is 40 characters of the standard base64 alphabet with at
// least one '/' and one '+', as AWS secret access keys have.
func awsStyleKey() string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	b := make([]byte, 40)
	for i := range b {
		n, _ := rand.Int(rand.Reader, big.NewInt(int64(len(alphabet))))
		b[i] = alphabet[n.Int64()]
	}
	b[7], b[23] = '/', '+'
	return string(b)
}

// serveBulkUpstream runs in the bulk upstream's process: GET /bulk/<n>
// answers n MiB of JSON lines, with a Content-Length.
func serveBulkUpstream() {
	block := bulkBlock()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("http://" + ln.Addr().String())
	log.Fatal(http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mib, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/bulk/"))
		if err != nil || mib < 1 {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		w.Header().Set("Content-Length", strconv.Itoa(mib<<20))
		for range mib {
			if _, err := w.Write(block); err != nil {
				return
			}
		}
	})))
}

// bulkBlock is 1 MiB of customer records, one JSON object a line.
func bulkBlock() []byte {
	names := []string{"Ada Lovelace", "Grace Hopper", "Alan Turing", "Edsger Dijkstra", "Barbara Liskov", "Donald Knuth", "Frances Allen", "Ken Thompson"}
	var b strings.Builder
	for i := 0; b.Len() < 1<<20; i++ {
		name := names[i%len(names)]
		fmt.Fprintf(&b, `{"id":"cus_%08d","object":"customer","name":%q,"email":"%s@example.com","balance":%d,"created":%d,"metadata":{"plan":"pro","seats":%d}}`+"\n",
			i, name, strings.ToLower(strings.ReplaceAll(name, " ", ".")), (i*7919)%100000, 1700000000+i*37, i%50)
	}
	return []byte(b.String()[:1<<20])
}
