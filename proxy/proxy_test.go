package proxy

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

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

func TestInjectionStyles(t *testing.T) {
	tests := []struct {
		name   string
		adjust func(*Grant)
		check  func(t *testing.T, r *http.Request)
	}{
		{"bearer", nil, func(t *testing.T, r *http.Request) {
			if got := r.Header.Get("Authorization"); got != "Bearer "+realKey {
				t.Fatalf("Authorization %q", got)
			}
		}},
		{"header with format", func(g *Grant) {
			g.AuthType, g.AuthName, g.AuthFormat = "header", "Authorization", "Token {{credential}}"
		}, func(t *testing.T, r *http.Request) {
			if got := r.Header.Get("Authorization"); got != "Token "+realKey {
				t.Fatalf("Authorization %q", got)
			}
		}},
		{"x-api-key", func(g *Grant) {
			g.AuthType, g.AuthName, g.AuthFormat = "header", "x-api-key", "{{credential}}"
			g.Headers = map[string]string{"anthropic-version": "2023-06-01"}
		}, func(t *testing.T, r *http.Request) {
			if r.Header.Get("X-Api-Key") != realKey || r.Header.Get("Anthropic-Version") != "2023-06-01" {
				t.Fatalf("headers %v", r.Header)
			}
		}},
		{"basic", func(g *Grant) {
			g.AuthType, g.AuthName, g.AuthFormat = "basic", "Authorization", "{{credential}}:"
		}, func(t *testing.T, r *http.Request) {
			user, pass, ok := r.BasicAuth()
			if !ok || user != realKey || pass != "" {
				t.Fatalf("basic auth %q %q %v", user, pass, ok)
			}
		}},
		{"query", func(g *Grant) {
			g.AuthType, g.AuthName, g.AuthFormat = "query", "key", "{{credential}}"
		}, func(t *testing.T, r *http.Request) {
			if got := r.URL.Query()["key"]; len(got) != 1 || got[0] != realKey {
				t.Fatalf("key %v", got)
			}
			if r.URL.Query().Get("alt") != "json" {
				t.Fatalf("other parameters lost: %v", r.URL.RawQuery)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up, seen := recordingUpstream(t)
			p := newTestProxy(t, up.URL, tt.adjust)
			resp, body := get(t, p.url+"/v1/models?alt=json&key=attacker", map[string]string{"Authorization": "Bearer " + p.token})
			if resp.StatusCode != 200 || body != `{"ok":true}` {
				t.Fatalf("%d %s", resp.StatusCode, body)
			}
			r := seen.last(t)
			tt.check(t, r)
			assertNoToken(t, r, p.token)
		})
	}
}

// assertNoToken fails if the phantom token reached the upstream anywhere.
func assertNoToken(t *testing.T, r *http.Request, tok string) {
	t.Helper()
	var dump bytes.Buffer
	r.Header.Write(&dump)
	dump.WriteString(r.RequestURI)
	body, _ := io.ReadAll(r.Body)
	dump.Write(body)
	if strings.Contains(dump.String(), tok) || strings.Contains(dump.String(), base64.StdEncoding.EncodeToString([]byte(tok))) {
		t.Fatalf("the upstream received the phantom token:\n%s", dump.String())
	}
}

func TestTokenFoundWhereverSDKsPutIt(t *testing.T) {
	up, seen := recordingUpstream(t)
	p := newTestProxy(t, up.URL, nil)
	p.srv.finder = newTokenFinder([]string{"X-Custom-Key"}, DefaultQueryParams)
	basicUser := base64.StdEncoding.EncodeToString([]byte(p.token + ":"))
	basicPass := base64.StdEncoding.EncodeToString([]byte("user:" + p.token))
	for name, tc := range map[string]struct {
		header map[string]string
		query  string
	}{
		"bearer":         {header: map[string]string{"Authorization": "Bearer " + p.token}},
		"basic user":     {header: map[string]string{"Authorization": "Basic " + basicUser}},
		"basic password": {header: map[string]string{"Authorization": "Basic " + basicPass}},
		"x-api-key":      {header: map[string]string{"x-api-key": p.token}},
		"api-key":        {header: map[string]string{"api-key": p.token}},
		"x-goog-api-key": {header: map[string]string{"x-goog-api-key": p.token}},
		"configured":     {header: map[string]string{"X-Custom-Key": p.token}},
		"query key":      {query: "key=" + p.token},
		"query api_key":  {query: "api_key=" + p.token},
		"same twice":     {header: map[string]string{"x-api-key": p.token, "Authorization": "Bearer " + p.token}},
	} {
		t.Run(name, func(t *testing.T) {
			before := seen.count()
			target := p.url + "/v1/x"
			if tc.query != "" {
				target += "?" + tc.query + "&keep=1"
			}
			resp, body := get(t, target, tc.header)
			if resp.StatusCode != 200 || seen.count() != before+1 {
				t.Fatalf("%d %s", resp.StatusCode, body)
			}
			r := seen.last(t)
			assertNoToken(t, r, p.token)
			if r.Header.Get("Authorization") != "Bearer "+realKey {
				t.Fatalf("Authorization %q", r.Header.Get("Authorization"))
			}
			if tc.query != "" && r.URL.RawQuery != "keep=1" {
				t.Fatalf("query %q", r.URL.RawQuery)
			}
		})
	}
}

func BenchmarkFindToken(b *testing.B) {
	f := newTokenFinder(nil, DefaultQueryParams)
	h := http.Header{"Authorization": {"Bearer " + mintToken(b)}, "Content-Type": {"application/json"}}
	for b.Loop() {
		if _, err := f.find(h, "limit=10"); err != nil {
			b.Fatal(err)
		}
	}
}

func TestRefusedBeforeVault(t *testing.T) {
	up, seen := recordingUpstream(t)
	p := newTestProxy(t, up.URL, nil)
	other := mintToken(t)
	tampered := p.token[:len(p.token)-1] + map[bool]string{true: "A", false: "B"}[p.token[len(p.token)-1] != 'A']
	for name, tc := range map[string]struct {
		header map[string]string
		path   string
		status int
		typ    string
	}{
		"no token":          {nil, "/v1/x", 401, errUnauthorized},
		"a real key":        {map[string]string{"Authorization": "Bearer " + realKey}, "/v1/x", 401, errUnauthorized},
		"tampered checksum": {map[string]string{"Authorization": "Bearer " + tampered}, "/v1/x", 401, errUnauthorized},
		"two tokens":        {map[string]string{"Authorization": "Bearer " + p.token, "x-api-key": other}, "/v1/x", 400, errBadRequest},
		"token and garbage": {map[string]string{"Authorization": "Bearer " + p.token, "x-api-key": "junk"}, "/v1/x", 401, errUnauthorized},
		"encoded slash":     {map[string]string{"Authorization": "Bearer " + p.token}, "/v1/a%2Fb", 400, errBadRequest},
		"encoded dots":      {map[string]string{"Authorization": "Bearer " + p.token}, "/v1/%2e%2e/admin", 400, errBadRequest},
		"double slash":      {map[string]string{"Authorization": "Bearer " + p.token}, "//v1/x", 400, errBadRequest},
		"semicolon":         {map[string]string{"Authorization": "Bearer " + p.token}, "/v1/x;a=b", 400, errBadRequest},
		"upgrade":           {map[string]string{"Authorization": "Bearer " + p.token, "Connection": "Upgrade", "Upgrade": "websocket"}, "/v1/x", 400, errBadRequest},
	} {
		t.Run(name, func(t *testing.T) {
			calls := len(p.engine.Resolves())
			req, _ := http.NewRequest("GET", p.url+"/", nil)
			req.URL.Opaque = tc.path // sent as is, not cleaned
			for k, v := range tc.header {
				req.Header.Set(k, v)
			}
			resp, body := do(t, req)
			wantError(t, resp, body, tc.status, tc.typ)
			if len(p.engine.Resolves()) != calls {
				t.Fatal("the engine was asked about a request refused locally")
			}
		})
	}
	if seen.count() != 0 {
		t.Fatal("a refused request reached the upstream")
	}
}

func TestDecisionsMapToStatuses(t *testing.T) {
	up, seen := recordingUpstream(t)
	p := newTestProxy(t, up.URL, nil)
	for reason, want := range map[string]struct {
		status int
		typ    string
	}{
		"unknown_token": {401, errUnauthorized}, "expired": {401, errUnauthorized}, "revoked": {401, errUnauthorized},
		"uses_exhausted": {401, errUnauthorized}, "route_deleted": {401, errUnauthorized},
		"method_not_allowed": {403, errForbidden}, "path_not_allowed": {403, errForbidden}, "cidr_denied": {403, errForbidden},
		"bad_request": {400, errBadRequest},
	} {
		tok := mintToken(t)
		p.engine.Deny(tok, reason)
		resp, body := get(t, p.url+"/v1/x", map[string]string{"Authorization": "Bearer " + tok})
		wantError(t, resp, body, want.status, want.typ)
		if !strings.Contains(body, `"reason":"`+reason+`"`) {
			t.Errorf("%s: body %s", reason, body)
		}
	}
	p.engine.Fail(errors.New("dial tcp 10.0.0.1:8200: connection refused"))
	resp, body := get(t, p.url+"/v1/x", map[string]string{"Authorization": "Bearer " + p.token})
	wantError(t, resp, body, 503, errUnavailable)
	if strings.Contains(body, "10.0.0.1") {
		t.Fatalf("internal error text reached the agent: %s", body)
	}
	if seen.count() != 0 {
		t.Fatal("a denied request reached the upstream")
	}
}

func TestResolveGetsExactRequest(t *testing.T) {
	up, seen := recordingUpstream(t)
	p := newTestProxy(t, up.URL+"/base", nil)
	req, _ := http.NewRequest("POST", p.url+"/", strings.NewReader(`{"a":1}`))
	req.URL.Opaque = "/v1/files/report%20final.pdf:meta"
	req.URL.RawQuery = "b=2&a=%2F1"
	req.Header.Set("Authorization", "Bearer "+p.token)
	req.Header.Set("X-Forwarded-For", "203.0.113.9")
	resp, _ := do(t, req)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	call := p.engine.Resolves()[0]
	if call.Method != "POST" || call.Path != "/v1/files/report%20final.pdf:meta" || call.ClientIP != "127.0.0.1" {
		t.Fatalf("resolve request %+v", call)
	}
	if got := seen.raw[0]; got != "/base/v1/files/report%20final.pdf:meta?b=2&a=%2F1" {
		t.Fatalf("upstream request target %q", got)
	}
	r := seen.last(t)
	if r.Header.Get("X-Forwarded-For") != "" {
		t.Fatalf("forwarded a client-supplied X-Forwarded-For: %q", r.Header.Get("X-Forwarded-For"))
	}
	if body, _ := io.ReadAll(r.Body); string(body) != `{"a":1}` {
		t.Fatalf("body %q", body)
	}
}

func TestConnectionHeaderCannotStripTheKey(t *testing.T) {
	up, seen := recordingUpstream(t)
	p := newTestProxy(t, up.URL, func(g *Grant) {
		g.AuthType, g.AuthName, g.AuthFormat = "header", "x-api-key", "{{credential}}"
	})
	for _, conn := range []string{"Authorization", "X-Api-Key", "x-api-key, Authorization"} {
		resp, body := get(t, p.url+"/v1/x", map[string]string{"x-api-key": p.token, "Connection": conn})
		if resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
		if got := seen.last(t).Header.Get("X-Api-Key"); got != realKey {
			t.Fatalf("Connection: %s stripped the injected key (got %q)", conn, got)
		}
	}
}

func TestScrubsEchoedCredential(t *testing.T) {
	b64 := base64.StdEncoding.EncodeToString([]byte(realKey))
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Echo", "key="+realKey)
		w.Header().Set("Location", "https://example.com/cb?key="+url.QueryEscape(realKey))
		w.WriteHeader(http.StatusUnauthorized)
		flusher := w.(http.Flusher)
		half := len(realKey) / 2
		// Split across writes and flushes, so the proxy sees separate chunks.
		io.WriteString(w, `{"error":"Incorrect API key provided: `+realKey[:half])
		flusher.Flush()
		time.Sleep(20 * time.Millisecond)
		io.WriteString(w, realKey[half:]+`", "b64":"`+b64+`", "url":"`+url.QueryEscape(realKey)+`"}`)
	}))
	t.Cleanup(up.Close)
	p := newTestProxy(t, up.URL, nil)
	resp, body := get(t, p.url+"/v1/x", map[string]string{"Authorization": "Bearer " + p.token})
	if resp.StatusCode != 401 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	var all bytes.Buffer
	resp.Header.Write(&all)
	all.WriteString(body)
	for _, form := range []string{realKey, b64, url.QueryEscape(realKey), realKey[:20]} {
		if strings.Contains(all.String(), form) {
			t.Fatalf("the agent received the credential (%q):\n%s", form, all.String())
		}
	}
	if !strings.Contains(body, "Incorrect API key provided: ****") {
		t.Fatalf("body was not masked in place: %s", body)
	}
}

func TestScrubsGzipBodies(t *testing.T) {
	var acceptEncoding string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		acceptEncoding = r.Header.Get("Accept-Encoding")
		w.Header().Set("Content-Encoding", "gzip")
		gz := gzip.NewWriter(w)
		io.WriteString(gz, "echo "+realKey)
		gz.Close()
	}))
	t.Cleanup(up.Close)
	p := newTestProxy(t, up.URL, nil)
	req, _ := http.NewRequest("GET", p.url+"/v1/x", nil)
	req.Header.Set("Authorization", "Bearer "+p.token)
	req.Header.Set("Accept-Encoding", "br")
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Header.Get("Content-Encoding") != "" || string(body) != "echo "+strings.Repeat("*", len(realKey)) {
		t.Fatalf("encoding %q body %q (upstream was asked for %q)", resp.Header.Get("Content-Encoding"), body, acceptEncoding)
	}
}

func TestRefusesUnscrubbableEncodings(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Encoding", "br")
		w.Write([]byte("opaque"))
	}))
	t.Cleanup(up.Close)
	p := newTestProxy(t, up.URL, nil)
	resp, body := get(t, p.url+"/v1/x", map[string]string{"Authorization": "Bearer " + p.token})
	wantError(t, resp, body, 502, errUpstream)
}

func TestSSEStreamsUnbuffered(t *testing.T) {
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"delta\":\"hello\"}\n\n")
		w.(http.Flusher).Flush()
		<-release // the upstream is not finished until the client saw the first event
		io.WriteString(w, "data: [DONE]\n\n")
	}))
	t.Cleanup(up.Close)
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	p := newTestProxy(t, up.URL, nil)
	req, _ := http.NewRequest("POST", p.url+"/v1/chat/completions", strings.NewReader(`{"stream":true}`))
	req.Header.Set("Authorization", "Bearer "+p.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := bufio.NewReader(resp.Body)
	first, err := lines.ReadString('\n')
	if err != nil || first != "data: {\"delta\":\"hello\"}\n" {
		t.Fatalf("first event %q, %v", first, err)
	}
	close(release)
	rest, _ := io.ReadAll(lines)
	if string(rest) != "\ndata: [DONE]\n\n" {
		t.Fatalf("rest %q", rest)
	}
}

func TestRedirectsAreNotFollowed(t *testing.T) {
	var hits int
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits++
		http.Redirect(w, r, "http://127.0.0.1:1/steal?k="+url.QueryEscape(realKey), http.StatusFound)
	}))
	t.Cleanup(up.Close)
	p := newTestProxy(t, up.URL, nil)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest("GET", p.url+"/v1/x", nil)
	req.Header.Set("Authorization", "Bearer "+p.token)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || hits != 1 {
		t.Fatalf("status %d, upstream hits %d", resp.StatusCode, hits)
	}
	if loc := resp.Header.Get("Location"); strings.Contains(loc, url.QueryEscape(realKey)) {
		t.Fatalf("Location leaks the key: %s", loc)
	}
}

func TestUpstreamFailures(t *testing.T) {
	t.Run("down", func(t *testing.T) {
		up := httptest.NewServer(http.NotFoundHandler())
		addr := up.URL
		up.Close()
		p := newTestProxy(t, addr, func(g *Grant) {
			g.AuthType, g.AuthName, g.AuthFormat = "query", "key", "{{credential}}"
		})
		resp, body := get(t, p.url+"/v1/x", map[string]string{"Authorization": "Bearer " + p.token})
		wantError(t, resp, body, 502, errUpstream)
		if strings.Contains(body, "127.0.0.1") {
			t.Fatalf("upstream address leaked: %s", body)
		}
	})
	t.Run("slow", func(t *testing.T) {
		up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}))
		t.Cleanup(up.Close)
		p := newTestProxy(t, up.URL, nil)
		p.srv.upstream = newUpstreamTransport(Config{UpstreamTimeout: 100 * time.Millisecond, DialTimeout: time.Second})
		resp, body := get(t, p.url+"/v1/x", map[string]string{"Authorization": "Bearer " + p.token})
		wantError(t, resp, body, 504, errUpstreamTimeout)
	})
}

func TestBodyLimit(t *testing.T) {
	up, seen := recordingUpstream(t)
	p := newTestProxy(t, up.URL, nil)
	p.srv.cfg.MaxBodyBytes = 10
	req, _ := http.NewRequest("POST", p.url+"/v1/x", strings.NewReader(strings.Repeat("a", 11)))
	req.Header.Set("Authorization", "Bearer "+p.token)
	resp, body := do(t, req)
	wantError(t, resp, body, 413, errTooLarge)
	if seen.count() != 0 {
		t.Fatal("an oversized body was forwarded")
	}
}

func TestAuditRecords(t *testing.T) {
	up, _ := recordingUpstream(t)
	p := newTestProxy(t, up.URL, nil)
	denied := mintToken(t)
	p.engine.Deny(denied, "path_not_allowed")
	get(t, p.url+"/v1/ok?key2=v", map[string]string{"Authorization": "Bearer " + p.token})
	get(t, p.url+"/v1/no", map[string]string{"Authorization": "Bearer " + denied})
	get(t, p.url+"/v1/none", nil)

	testutil.Eventually(t, 5*time.Second, func() bool { return len(p.auditLines(t)) >= 3 }, "fewer than 3 audit lines after 5s")
	raw, _ := os.ReadFile(p.srv.cfg.AuditFile)
	for _, secret := range []string{p.token, denied, realKey} {
		if strings.Contains(string(raw), secret) {
			t.Fatalf("the audit log holds a secret:\n%s", raw)
		}
	}
	// A request's line is written just after its response.
	var recs []auditRecord
	testutil.Eventually(t, 5*time.Second, func() bool { recs = p.auditLines(t); return len(recs) >= 3 }, "fewer than 3 audit lines after 5s")
	if len(recs) != 3 {
		t.Fatalf("%d audit lines, want 3", len(recs))
	}
	ok := recs[0]
	if ok.Accessor != "pha_test" || ok.Route != "r" || ok.Decision != "allowed" || ok.Status != 200 || ok.UpstreamStatus != 200 ||
		ok.Path != "/v1/ok" || ok.Method != "GET" || ok.BytesOut != int64(len(`{"ok":true}`)) || ok.RequestID == "" || ok.ClientAddr == "" {
		t.Fatalf("allowed record %+v", ok)
	}
	if no := recs[1]; no.Decision != "denied" || no.Reason != "path_not_allowed" || no.Status != 403 || no.Accessor != "pha_denied" {
		t.Fatalf("denied record %+v", no)
	}
	if none := recs[2]; none.Status != 401 || none.Reason != "unknown_token" {
		t.Fatalf("no-token record %+v", none)
	}
}

func TestAdminEndpoints(t *testing.T) {
	up, _ := recordingUpstream(t)
	p := newTestProxy(t, up.URL, nil)
	get(t, p.url+"/v1/x", map[string]string{"Authorization": "Bearer " + p.token})
	admin := httptest.NewServer(p.srv.AdminHandler())
	t.Cleanup(admin.Close)

	if resp, _ := get(t, admin.URL+"/healthz", nil); resp.StatusCode != 200 {
		t.Fatalf("healthz %d", resp.StatusCode)
	}
	if resp, _ := get(t, admin.URL+"/readyz", nil); resp.StatusCode != 200 {
		t.Fatalf("readyz %d", resp.StatusCode)
	}
	p.engine.SetReady(false)
	if resp, _ := get(t, admin.URL+"/readyz", nil); resp.StatusCode != 503 {
		t.Fatalf("readyz when not ready %d", resp.StatusCode)
	}
	// pprof only when asked for.
	if resp, _ := get(t, admin.URL+"/debug/pprof/heap", nil); resp.StatusCode != 404 {
		t.Fatalf("pprof without -pprof: %d", resp.StatusCode)
	}
	p.srv.cfg.Pprof = true
	withPprof := httptest.NewServer(p.srv.AdminHandler())
	t.Cleanup(withPprof.Close)
	if resp, _ := get(t, withPprof.URL+"/debug/pprof/heap", nil); resp.StatusCode != 200 {
		t.Fatalf("pprof with -pprof: %d", resp.StatusCode)
	}
	var metrics string
	testutil.Eventually(t, 5*time.Second, func() bool { // counted just after the response
		_, metrics = get(t, admin.URL+"/metrics", nil)
		return strings.Contains(metrics, "phantom_proxy_requests_total{")
	}, "no request counted in /metrics after 5s")
	for _, want := range []string{`phantom_proxy_requests_total{decision="allowed",route="r",status="200"} 1`, "phantom_proxy_resolve_seconds", "phantom_proxy_upstream_seconds"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q:\n%s", want, metrics)
		}
	}
}

func TestScrubsTrailers(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Debug")
		io.WriteString(w, "body")
		w.(http.Flusher).Flush()
		w.Header().Set("X-Debug", "used key "+realKey)
	}))
	t.Cleanup(up.Close)
	p := newTestProxy(t, up.URL, nil)
	resp, body := get(t, p.url+"/v1/x", map[string]string{"Authorization": "Bearer " + p.token})
	if body != "body" {
		t.Fatalf("body %q", body)
	}
	got := resp.Trailer.Get("X-Debug")
	if got == "" || strings.Contains(got, realKey) {
		t.Fatalf("trailer %q", got)
	}
}
