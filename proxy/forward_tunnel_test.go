package proxy

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/phantomvault/phantom/internal/origin"
	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/internal/testutil"
	"github.com/phantomvault/phantom/internal/token"
	"github.com/phantomvault/phantom/plugin"
)

// grantTunnels plays the engine's tunnel call from a fakeResolver's grants:
// a known token may tunnel to its grant's origin; no token to any grant's;
// a denied token gets its reason.
type grantTunnels struct {
	res   *fakeResolver
	err   error
	mu    sync.Mutex
	calls []resolve.TunnelRequest
}

func (g *grantTunnels) CheckTunnel(_ context.Context, req resolve.TunnelRequest) (*resolve.TunnelAnswer, error) {
	g.mu.Lock()
	g.calls = append(g.calls, req)
	g.mu.Unlock()
	if g.err != nil {
		return nil, g.err
	}
	g.res.mu.Lock()
	defer g.res.mu.Unlock()
	deny := func(reason string) (*resolve.TunnelAnswer, error) {
		return &resolve.TunnelAnswer{Allowed: new(false), Reason: reason}, nil
	}
	leadsThere := func(gr *Grant) bool {
		o, err := origin.OfURL(gr.Upstream)
		return err == nil && o.String() == req.Origin
	}
	if req.Token == "" {
		for _, gr := range g.res.grants {
			if leadsThere(gr) {
				return &resolve.TunnelAnswer{Allowed: new(true)}, nil
			}
		}
		return deny(resolve.ReasonOriginNotAllowed)
	}
	if reason, ok := g.res.deny[req.Token]; ok {
		return deny(reason)
	}
	gr, ok := g.res.grants[req.Token]
	switch {
	case !ok:
		return deny(resolve.ReasonUnknownToken)
	case !leadsThere(gr):
		return deny(resolve.ReasonOriginNotAllowed)
	}
	return &resolve.TunnelAnswer{Allowed: new(true), Route: gr.Route, Accessor: gr.Accessor}, nil
}

// connectStatus sends CONNECT target with proxyToken (none if empty) and
// returns the answer's status and body.
func connectStatus(t *testing.T, addr, target, proxyToken string) (*http.Response, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	req := "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n"
	if proxyToken != "" {
		req += "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("x:"+proxyToken)) + "\r\n"
	}
	io.WriteString(conn, req+"\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode == 200 {
		return resp, ""
	}
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// TestForwardConnectChecked: a CONNECT is answered only once the engine
// allowed its origin; each refusal comes before any byte goes anywhere,
// with the status a client reports clearly, and is audited.
func TestForwardConnectChecked(t *testing.T) {
	f := newForwardFixture(t)
	checker := f.tunnels
	revoked := mintToken(t)
	f.p.resolver.mu.Lock()
	f.p.resolver.deny[revoked] = resolve.ReasonRevoked
	f.p.resolver.mu.Unlock()

	for _, c := range []struct {
		name, target, token string
		status              int
		reason              string
	}{
		{"its route's origin", "example.com:443", f.p.token, 200, ""},
		{"an origin a route names, no token", "EXAMPLE.com:443", "", 200, ""},
		{"another host", "example.org:443", f.p.token, 403, resolve.ReasonOriginNotAllowed},
		{"another port", "example.com:8443", f.p.token, 403, resolve.ReasonOriginNotAllowed},
		{"no token, a host no route names", "example.org:443", "", 403, resolve.ReasonOriginNotAllowed},
		{"a revoked token", "example.com:443", revoked, 407, resolve.ReasonRevoked},
		{"an unknown token", "example.com:443", mintToken(t), 407, resolve.ReasonUnknownToken},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, body := connectStatus(t, f.fwdAddr, c.target, c.token)
			if resp.StatusCode != c.status || c.reason != "" && !strings.Contains(body, `"reason":"`+c.reason+`"`) {
				t.Fatalf("CONNECT %s: %d %s", c.target, resp.StatusCode, body)
			}
			if c.status == 407 && resp.Header.Get("Proxy-Authenticate") == "" {
				t.Fatal("a 407 without Proxy-Authenticate")
			}
		})
	}
	// A token with a DNS-safe prefix pasted as the host: refused, and never
	// recorded (folded to lower case, Redact would no longer know it).
	pasted, err := token.New(rand.Reader, "sk-")
	if err != nil {
		t.Fatal(err)
	}
	if resp, body := connectStatus(t, f.fwdAddr, pasted+":443", ""); resp.StatusCode != 400 || !strings.Contains(body, "holds a phantom token") {
		t.Fatalf("CONNECT <token>:443: %d %s", resp.StatusCode, body)
	}
	checker.mu.Lock()
	last := checker.calls[len(checker.calls)-1]
	second := checker.calls[1]
	checker.mu.Unlock()
	if second.Origin != "example.com:443" || second.Token != "" || last.ClientIP != "127.0.0.1" {
		t.Fatalf("the checker was asked %+v, %+v", second, last)
	}
	if f.received.Load() != 0 {
		t.Fatal("the upstream received a request")
	}

	// Vault unavailable: 503, fail closed.
	checker.mu.Lock()
	checker.err = errors.New("Vault is down")
	checker.mu.Unlock()
	resp, body := connectStatus(t, f.fwdAddr, "example.com:443", f.p.token)
	if resp.StatusCode != 503 || !strings.Contains(body, "vault_unavailable") {
		t.Fatalf("Vault down: %d %s", resp.StatusCode, body)
	}
	f.stop()
	audit := f.auditLog(t)
	for _, want := range []string{
		`"route":"r","method":"CONNECT","path":"example.com:443","decision":"allowed"`,
		`"method":"CONNECT","path":"example.org:443","decision":"denied","reason":"origin_not_allowed","status":403`,
		`"method":"CONNECT","path":"example.com:443","decision":"denied","reason":"revoked","status":407`,
		`"method":"CONNECT","path":"example.com:443","decision":"error","reason":"vault_unavailable","status":503`,
	} {
		if !strings.Contains(audit, want) {
			t.Errorf("the audit log lacks %s:\n%s", want, audit)
		}
	}
	if strings.Contains(audit, strings.ToLower(pasted)) || strings.Contains(audit, pasted) {
		t.Errorf("the audit log holds the token pasted as a CONNECT host:\n%s", audit)
	}
}

// TestForwardNeedsTunnelChecker: no forward listener without the CONNECT check.
func TestForwardNeedsTunnelChecker(t *testing.T) {
	srv, err := NewServer(Config{VaultAddr: "http://unused", AuditFile: t.TempDir() + "/audit.log", ForwardCAGenerate: true},
		&fakeResolver{}, testMetrics(t), hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	adminLn, _ := net.Listen("tcp", "127.0.0.1:0")
	fwdLn, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	defer adminLn.Close()
	defer fwdLn.Close()
	if err := srv.ServeWithForward(context.Background(), ln, adminLn, fwdLn); err == nil || !strings.Contains(err.Error(), "tunnel checker") {
		t.Fatalf("ServeWithForward without a tunnel checker: %v", err)
	}
}

// TestTunnelRoundTrip: the proxy's tunnel call against the engine's tunnel
// path, over HTTP as Vault carries it.
func TestTunnelRoundTrip(t *testing.T) {
	ctx := context.Background()
	storage := &logical.InmemStorage{}
	conf := logical.TestBackendConfig()
	conf.StorageView = storage
	engine, err := plugin.Factory(ctx, conf)
	if err != nil {
		t.Fatal(err)
	}
	call := func(op logical.Operation, path string, data map[string]any) map[string]any {
		t.Helper()
		resp, err := engine.HandleRequest(ctx, &logical.Request{Operation: op, Path: path, Data: data, Storage: storage})
		if err != nil || resp != nil && resp.IsError() {
			t.Fatalf("%s %s: %v %v", op, path, err, resp)
		}
		if resp == nil {
			return nil
		}
		return resp.Data
	}
	call(logical.UpdateOperation, "routes/r", map[string]any{"upstream": "https://API.example.com", "allowed_paths": "/v1/**",
		"allowed_methods": "GET", "credential": "sk_live_RoundTrip0123456789"})
	tok := call(logical.UpdateOperation, "token/r", nil)["token"].(string)
	revoked := call(logical.UpdateOperation, "token/r", nil)
	call(logical.DeleteOperation, "tokens/"+revoked["accessor"].(string), nil)

	var path atomic.Value
	vault := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path.Store(r.Method + " " + r.URL.Path)
		var data map[string]any
		json.NewDecoder(r.Body).Decode(&data)
		resp, err := engine.HandleRequest(r.Context(), &logical.Request{Operation: logical.PatchOperation,
			Path: strings.TrimPrefix(r.URL.Path, "/v1/phantom/"), Data: data, Storage: storage})
		if err != nil || resp.IsError() {
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(map[string]any{"errors": []string{"refused"}})
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"data": resp.Data})
	}))
	t.Cleanup(vault.Close)
	rc := resolveCall{http: vault.Client(), mountURL: vault.URL + "/v1/phantom/", timeout: 10 * time.Second, forward: new(atomic.Bool)}
	target, err := parseConnectTarget("API.Example.com:443") // as the proxy reads a CONNECT
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		req    resolve.TunnelRequest
		reason string
	}{
		{resolve.TunnelRequest{Origin: target.String(), Token: tok, ClientIP: "127.0.0.1"}, ""},
		{resolve.TunnelRequest{Origin: target.String()}, ""},
		{resolve.TunnelRequest{Origin: "api.example.com:8443", Token: tok}, resolve.ReasonOriginNotAllowed},
		{resolve.TunnelRequest{Origin: "other.example.com:443"}, resolve.ReasonOriginNotAllowed},
		{resolve.TunnelRequest{Origin: target.String(), Token: revoked["token"].(string)}, resolve.ReasonRevoked},
	} {
		a, err := rc.tunnel(ctx, "t", c.req)
		if err != nil {
			t.Fatal(err)
		}
		if c.reason == "" && !*a.Allowed || c.reason != "" && (*a.Allowed || a.Reason != c.reason || !resolve.Known(a.Reason)) {
			t.Errorf("%+v: %+v", c.req, a)
		}
	}
	if got := path.Load(); got != "PATCH /v1/phantom/tunnel" {
		t.Fatalf("the call went to %v", got)
	}
}

// auditLog is what the fixture's proxy audited so far.
func (f *forwardFixture) auditLog(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(f.audit)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A request inside a tunnel whose token's route leads to another origin is
// refused after the resolve: under a budget it is settled all the same, or
// the engine would hold its reservation.
func TestForwardOriginRefusalSettles(t *testing.T) {
	f := newForwardFixture(t)
	other := mintToken(t)
	u, _ := url.Parse("https://example.org")
	f.p.resolver.mu.Lock()
	f.p.resolver.grants[other] = &Grant{Route: "o", Accessor: "pha_test", Upstream: u, Credential: realKey,
		AuthType: "bearer", AuthName: "Authorization", AuthFormat: "Bearer {{credential}}", Headers: map[string]string{},
		Limits: &resolve.Limits{UsageFormat: resolve.UsageOpenAI, MaxOutputTokens: 10, BudgetRemaining: new(int64(100))}}
	f.p.resolver.mu.Unlock()
	sink := &testutil.UsageSink{}
	rep := NewUsageReporter(sink, time.Hour, time.Second, f.p.srv.metrics, hclog.NewNullLogger())
	f.p.srv.usage = rep

	req, _ := http.NewRequest("POST", "https://example.com/v1/chat/completions", strings.NewReader(`{"model":"m"}`))
	req.Header.Set("Authorization", "Bearer "+other)
	resp, err := f.client("").Do(req) // a tunnel without a token, to an origin route r names
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 403 || !strings.Contains(string(body), resolve.ReasonOriginNotAllowed) || f.received.Load() != 0 {
		t.Fatalf("another route's token in the tunnel: %d %s", resp.StatusCode, body)
	}
	waitReported(t, rep, sink, resolve.UsageReport{Settled: 1})
}
