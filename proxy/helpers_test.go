package proxy

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/internal/testutil"
	"github.com/phantomvault/phantom/internal/token"
	"github.com/phantomvault/phantom/proxy/engine/enginetest"
)

const realKey = "sk_live_51REALkeyNeverLeaves0123456789abcdef"

type testProxy struct {
	url     string
	engine  *enginetest.Engine
	token   string
	audit   *bytes.Buffer
	auditMu *sync.Mutex
	srv     *Server
	logs    *testutil.LockedBuffer // the proxy's log
}

// newTestProxy puts a proxy in front of upstream with one valid token whose
// grant grant() may adjust.
func newTestProxy(t *testing.T, upstream string, adjust func(*Grant)) *testProxy {
	t.Helper()
	tok := mintToken(t)
	u, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	g := &Grant{
		Route: "r", Accessor: "pha_test", Upstream: u, Credential: realKey,
		AuthType: "bearer", AuthName: "Authorization", AuthFormat: "Bearer {{credential}}",
		Headers: map[string]string{},
	}
	if adjust != nil {
		adjust(g)
	}
	res := enginetest.New()
	res.Allow(tok, (*resolve.Grant)(g))
	logs := &testutil.LockedBuffer{}
	srv, err := NewServer(Config{VaultAddr: "http://unused", AuditFile: filepath.Join(t.TempDir(), "audit.log")}, res, testMetrics(t),
		hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Debug}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	t.Cleanup(func() {
		// Whatever a test did, no log line may hold the token or the key.
		if s := logs.String(); strings.Contains(s, tok) || strings.Contains(s, realKey) {
			t.Errorf("the proxy's log holds a secret:\n%s", s)
		}
	})
	return &testProxy{url: ts.URL, engine: res, token: tok, srv: srv, logs: logs}
}

// testMetrics are a proxy's metrics, fresh for each test.
func testMetrics(t testing.TB) *Metrics {
	t.Helper()
	m, err := NewMetrics()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (p *testProxy) auditLines(t *testing.T) []auditRecord {
	t.Helper()
	raw, err := os.ReadFile(p.srv.cfg.AuditFile)
	if err != nil {
		t.Fatal(err)
	}
	var recs []auditRecord
	for line := range strings.Lines(string(raw)) {
		var r auditRecord
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		recs = append(recs, r)
	}
	return recs
}

func mintToken(t testing.TB) string {
	t.Helper()
	tok, err := token.New(rand.Reader, token.DefaultPrefix)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// seen is what an upstream received.
type seen struct {
	mu   sync.Mutex
	reqs []*http.Request
	raw  []string // request line targets as sent
}

func (s *seen) last(t *testing.T) *http.Request {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.reqs) == 0 {
		t.Fatal("the upstream received nothing")
	}
	return s.reqs[len(s.reqs)-1]
}

func (s *seen) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.reqs)
}

// recordingUpstream answers 200 {"ok":true} and records every request.
func recordingUpstream(t *testing.T) (*httptest.Server, *seen) {
	t.Helper()
	s := &seen{}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		s.mu.Lock()
		s.reqs = append(s.reqs, r)
		s.raw = append(s.raw, r.RequestURI)
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"ok":true}`))
	}))
	t.Cleanup(ts.Close)
	return ts, s
}

func do(t *testing.T, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func get(t *testing.T, target string, header map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("GET", target, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	return do(t, req)
}

func wantError(t *testing.T, resp *http.Response, body string, status int, typ string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d: %s", resp.StatusCode, status, body)
	}
	var e errorBody
	if err := json.Unmarshal([]byte(body), &e); err != nil || e.Error.Type != typ || e.Error.Message == "" || e.Error.RequestID == "" {
		t.Fatalf("error body %q: want type %s (%v)", body, typ, err)
	}
	if resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("error content type %q", resp.Header.Get("Content-Type"))
	}
}
