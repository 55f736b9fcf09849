package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
)

// bulkResult is the throughput of one large response through each target,
// for each kind of body: what the response scrubber costs when it must look
// at every byte, whatever the body holds.
type bulkResult struct {
	MiB    int                    `json:"mib"`
	Rounds int                    `json:"rounds"`
	Bodies map[string]*bulkBodies `json:"bodies"`
}

type bulkBodies struct {
	GBps  map[string]float64 `json:"gb_per_second"` // median over rounds, 1 GB = 1e9 bytes
	Ratio float64            `json:"phantom_over_bare_proxy"`
}

// bulkBodyKinds are the bodies the bulk upstream serves: JSON lines of
// customer records, and near-misses of every form of the route's key (each
// with one byte changed), which make the scrubber's filter hit and verify
// as often as a body can.
var bulkBodyKinds = []string{"neutral", "adversarial"}

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
	key := awsStyleKey()
	os.Setenv(bulkKeyEnv, key) // the upstream's near-misses, the bare proxy's key
	upstream, stopUpstream := startChild("bulk upstream", "-bulk-upstream")
	defer stopUpstream()

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

	res := &bulkResult{MiB: mib, Rounds: rounds, Bodies: map[string]*bulkBodies{}}
	for _, kind := range bulkBodyKinds {
		path := "/bulk/" + kind + "/" + strconv.Itoa(mib)
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
					log.Fatalf("bulk %s %s: %v", kind, tg.name, err)
				}
				rates[tg.name] = append(rates[tg.name], r)
			}
		}
		b := &bulkBodies{GBps: map[string]float64{}}
		for name, rs := range rates {
			slices.Sort(rs)
			b.GBps[name] = round(rs[len(rs)/2] / 1e9)
			log.Printf("bulk %-11s %-10s %d MiB: %.3f GB/s (rounds: %v)", kind, name, mib, b.GBps[name], gbps(rs))
		}
		b.Ratio = round(b.GBps["phantom"] / b.GBps["bare-proxy"])
		res.Bodies[kind] = b
	}
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

// serveBulkUpstream runs in the bulk upstream's process: GET
// /bulk/<kind>/<n> answers n MiB of a bulkBodyKinds body, with a
// Content-Length.
func serveBulkUpstream() {
	blocks := map[string][]byte{"neutral": bulkBlock(), "adversarial": nearMissBlock(os.Getenv(bulkKeyEnv))}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("http://" + ln.Addr().String())
	log.Fatal(http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		kind, n, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/bulk/"), "/")
		block := blocks[kind]
		mib, err := strconv.Atoi(n)
		if err != nil || mib < 1 || block == nil {
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

// nearMissBlock is 1 MiB of near-misses of the forms an upstream might echo
// key in: raw, JSON-escaped ("\/", "\u002B"), percent-encoded, HTML, hex,
// byte dumps, base64 at each alignment and UTF-16; each written with its
// second, a middle or its last but one byte changed (inside what carries
// the key, base64's edge characters aside), or cut short by two.
func nearMissBlock(key string) []byte {
	if key == "" {
		log.Fatal("bulk upstream: no key in $" + bulkKeyEnv)
	}
	dump := func(format, sep string) string {
		parts := make([]string, len(key))
		for i := range len(key) {
			parts[i] = fmt.Sprintf(format, key[i])
		}
		return strings.Join(parts, sep)
	}
	forms := []string{
		key,
		strings.NewReplacer("/", `\/`, "+", `\u002B`).Replace(key),
		url.QueryEscape(key),
		strings.ToLower(url.QueryEscape(key)),
		strings.NewReplacer("/", "&#x2F;", "+", "&plus;").Replace(key),
		hex.EncodeToString([]byte(key)),
		strings.ToUpper(hex.EncodeToString([]byte(key))),
		dump("%02x", " "), dump("%02X", "-"), dump("%02x", ":"), dump("%d", ", "), dump("0x%02x", ", "),
		dump("%c", "\x00"),
	}
	for align := range 3 {
		doc := strings.Repeat("#", align) + key
		forms = append(forms, base64.StdEncoding.EncodeToString([]byte(doc))[align*4/3+1:],
			base64.URLEncoding.EncodeToString([]byte(doc))[align*4/3+1:])
	}
	var b bytes.Buffer
	for b.Len() < 1<<20 {
		for _, f := range forms {
			for _, at := range []int{1, len(f) / 2, len(f) - 2} {
				m := []byte(f)
				m[at] ^= 0x01
				b.Write(m)
				b.WriteByte(' ')
			}
			b.WriteString(f[:len(f)-2])
			b.WriteByte('\n')
		}
	}
	return b.Bytes()[:1<<20]
}
