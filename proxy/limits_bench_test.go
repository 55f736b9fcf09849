package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/internal/testutil"
)

// BenchmarkServeLimits is one proxied chat completion, in process, for a
// token without limits and one with a model list, an output cap and a
// budget (the body read, checked and rewritten; the usage read from the
// response): what limits add to the proxy's own work.
func BenchmarkServeLimits(b *testing.B) {
	const answer = `{"id":"c","choices":[{"index":0,"message":{"role":"assistant","content":"hello"}}],"usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46}}`
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, answer)
	}))
	defer up.Close()
	u, _ := url.Parse(up.URL)
	reqBody := `{"model":"gpt-4o-mini","messages":[{"role":"user","content":"` + strings.Repeat("hello ", 100) + `"}]}`
	for _, c := range []struct {
		name   string
		limits *resolve.Limits
	}{
		{"plain", nil},
		{"limits", &resolve.Limits{UsageFormat: resolve.UsageOpenAI, AllowedModels: []string{"gpt-4o*"}, MaxOutputTokens: 1000, BudgetRemaining: new(int64(1 << 40))}},
	} {
		b.Run(c.name, func(b *testing.B) {
			tok := mintToken(b)
			g := &Grant{Route: "r", Accessor: "pha_b", Upstream: u, Credential: realKey, AuthType: "bearer",
				AuthName: "Authorization", AuthFormat: "Bearer {{credential}}", Headers: map[string]string{}, Limits: c.limits}
			res := &fakeResolver{grants: map[string]*Grant{tok: g}}
			srv, err := NewServer(Config{VaultAddr: "http://unused", AuditFile: filepath.Join(b.TempDir(), "audit.log")}, res, testMetrics(b), hclog.NewNullLogger())
			if err != nil {
				b.Fatal(err)
			}
			defer srv.Close()
			srv.usage = NewUsageReporter(&testutil.UsageSink{}, 0, 0, srv.metrics, hclog.NewNullLogger())
			b.ReportAllocs()
			for b.Loop() {
				res.calls = res.calls[:0]
				req := httptest.NewRequest("POST", "/v1/chat/completions", strings.NewReader(reqBody))
				req.Header.Set("Authorization", "Bearer "+tok)
				req.Header.Set("Content-Type", "application/json")
				w := httptest.NewRecorder()
				srv.ServeHTTP(w, req)
				if w.Code != 200 {
					b.Fatalf("%d %s", w.Code, w.Body)
				}
			}
		})
	}
}
