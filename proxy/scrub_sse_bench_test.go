package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/proxy/engine/enginetest"
)

// BenchmarkSSEFirstByte measures how long the first byte of a server-sent
// event takes from the upstream's write to the agent, through the proxy and
// its scrubber (µs/event). The upstream writes each event as:
//   - event: one flush, "data: ...\n\n";
//   - lines: "data: ...\n", flush, "\n", flush;
//   - unterminated: "data: ..." and a flush, then after 1 ms "\n\n": the
//     first read does not end in '\n', so the proxy holds its tail back
//     until the rest arrives.
func BenchmarkSSEFirstByte(b *testing.B) {
	for _, mode := range []string{"event", "lines", "unterminated"} {
		b.Run(mode, func(b *testing.B) { benchSSE(b, mode) })
	}
}

const sseData = `data: {"choices":[{"delta":{"content":"hello"}}]}`

func benchSSE(b *testing.B, mode string) {
	send := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		flush := w.(http.Flusher).Flush
		flush()
		for range send {
			switch mode {
			case "event":
				io.WriteString(w, sseData+"\n\n")
			case "lines":
				io.WriteString(w, sseData+"\n")
				flush()
				io.WriteString(w, "\n")
			case "unterminated":
				io.WriteString(w, sseData)
				flush()
				time.Sleep(time.Millisecond)
				io.WriteString(w, "\n\n")
			}
			flush()
		}
	}))
	defer up.Close()
	defer close(send)
	u, _ := url.Parse(up.URL)
	tok := mintToken(b)
	g := &Grant{Route: "r", Accessor: "pha_bench", Upstream: u, Credential: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
		AuthType: "bearer", AuthName: "Authorization", AuthFormat: "Bearer {{credential}}", Headers: map[string]string{}}
	res := enginetest.New()
	res.Allow(tok, (*resolve.Grant)(g))
	srv, err := NewServer(Config{VaultAddr: "http://unused", AuditFile: filepath.Join(b.TempDir(), "audit.log")}, res, testMetrics(b), hclog.NewNullLogger())
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	ts := httptest.NewServer(srv)
	defer ts.Close()

	req, _ := http.NewRequest("GET", ts.URL+"/v1/chat/completions", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	event := make([]byte, len(sseData)+2)
	var total time.Duration
	for b.Loop() {
		start := time.Now()
		send <- struct{}{}
		n, err := resp.Body.Read(event)
		if err != nil || n == 0 {
			b.Fatal(err)
		}
		total += time.Since(start)
		if _, err := io.ReadFull(resp.Body, event[n:]); err != nil || string(event) != sseData+"\n\n" {
			b.Fatalf("%q %v", event, err)
		}
	}
	b.ReportMetric(float64(total.Microseconds())/float64(b.N), "µs/event")
}
