package plugin

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/internal/token"
)

const testCredential = "sk_live_51TESTcredentialDoNotLeak0123456789"

// fakeClock is a settable clock shared by the backend under test.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// countingStorage counts reads and writes so tests can prove what resolve
// does not do.
type countingStorage struct {
	logical.Storage
	puts atomic.Int64
	gets atomic.Int64
}

func (s *countingStorage) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	s.gets.Add(1)
	return s.Storage.Get(ctx, key)
}

func (s *countingStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	s.puts.Add(1)
	return s.Storage.Put(ctx, e)
}

type testEnv struct {
	b       *backend
	storage *countingStorage
	clock   *fakeClock

	mu        sync.Mutex
	responses []recorded // every response, for leak scans
}

type recorded struct {
	path string
	resp *logical.Response
}

func getTestBackend(t testing.TB) *testEnv {
	t.Helper()
	clock := &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	return newTestEnv(t, clock, rand.Reader, &logical.InmemStorage{})
}

// newTestEnv runs a backend with the given clock, random source and
// storage; two of them on one storage are two nodes of a cluster.
func newTestEnv(t testing.TB, clock *fakeClock, random io.Reader, storage logical.Storage) *testEnv {
	t.Helper()
	b := newBackend(clock.Now, random)
	conf := logical.TestBackendConfig()
	conf.StorageView = storage
	if err := b.Setup(context.Background(), conf); err != nil {
		t.Fatal(err)
	}
	return &testEnv{b: b, storage: &countingStorage{Storage: storage}, clock: clock}
}

// request runs one request and returns Vault's view of it: the response,
// or an error response for a Go error.
func (e *testEnv) request(t testing.TB, op logical.Operation, path string, data map[string]any) (*logical.Response, error) {
	t.Helper()
	req := &logical.Request{
		Operation: op,
		Path:      path,
		Data:      data,
		Storage:   e.storage,
	}
	resp, err := e.b.HandleRequest(context.Background(), req)
	e.mu.Lock()
	e.responses = append(e.responses, recorded{path: path, resp: resp})
	e.mu.Unlock()
	return resp, err
}

// ok runs a request that must succeed.
func (e *testEnv) ok(t testing.TB, op logical.Operation, path string, data map[string]any) *logical.Response {
	t.Helper()
	resp, err := e.request(t, op, path, data)
	if err != nil || resp.IsError() {
		t.Fatalf("%s %s: err=%v resp=%v", op, path, err, resp)
	}
	return resp
}

// userError runs a request that must be refused with a 400 whose message
// contains want.
func (e *testEnv) userError(t testing.TB, op logical.Operation, path string, data map[string]any, want string) {
	t.Helper()
	resp, err := e.request(t, op, path, data)
	if err != nil {
		t.Fatalf("%s %s: want a 400 error response, got Go error %v", op, path, err)
	}
	if !resp.IsError() {
		t.Fatalf("%s %s: want an error response, got %v", op, path, resp)
	}
	if got := resp.Error().Error(); !strings.Contains(got, want) {
		t.Fatalf("%s %s: error %q does not mention %q", op, path, got, want)
	}
}

// periodic runs the engine's periodic work as Vault does: a rollback request
// through HandleRequest.
func (e *testEnv) periodic(t testing.TB) {
	t.Helper()
	if _, err := e.b.HandleRequest(context.Background(), &logical.Request{Operation: logical.RollbackOperation, Storage: e.storage}); err != nil {
		t.Fatal(err)
	}
}

func (e *testEnv) writeRoute(t testing.TB, name string, extra map[string]any) {
	t.Helper()
	data := map[string]any{
		"upstream":        "https://api.example.com",
		"allowed_paths":   "/v1/customers/**,/v1/charges/*",
		"allowed_methods": "GET,POST",
		"credential":      testCredential,
	}
	for k, v := range extra {
		data[k] = v
	}
	e.ok(t, logical.UpdateOperation, "routes/"+name, data)
}

// mint returns a token and the full response.
func (e *testEnv) mint(t testing.TB, route string, data map[string]any) (string, *logical.Response) {
	t.Helper()
	resp := e.ok(t, logical.UpdateOperation, "token/"+route, data)
	tok, _ := resp.Data["token"].(string)
	if tok == "" {
		t.Fatalf("mint %s: no token in %v", route, resp.Data)
	}
	return tok, resp
}

func (e *testEnv) resolve(t testing.TB, token, method, path, ip string) map[string]any {
	t.Helper()
	data := map[string]any{"token": token, "method": method, "path": path}
	if ip != "" {
		data["client_ip"] = ip
	}
	return e.ok(t, logical.PatchOperation, "resolve", data).Data // as phantom-proxy calls it
}

func wantAllowed(t testing.TB, d map[string]any) {
	t.Helper()
	if d["allowed"] != true {
		t.Fatalf("want allowed, got %v: %v", d["reason"], d["message"])
	}
}

func wantDenied(t testing.TB, d map[string]any, reason string) {
	t.Helper()
	if d["allowed"] != false || d["reason"] != reason {
		t.Fatalf("want denied with %s, got allowed=%v reason=%v", reason, d["allowed"], d["reason"])
	}
	if _, leaked := d["credential"]; leaked {
		t.Fatal("a denial carries a credential")
	}
}

// TestSecretsNeverLeak drives every path, then scans every response and every
// storage entry: the credential may appear only in allowed resolve answers
// and in route storage (seal-wrapped); a token only in its own mint response.
func TestSecretsNeverLeak(t *testing.T) {
	e := getTestBackend(t)
	e.ok(t, logical.UpdateOperation, "config", map[string]any{"proxy_url": "https://phantom.internal"})
	e.writeRoute(t, "stripe", map[string]any{"num_uses": 5, "bound_cidrs": "10.0.0.0/8"})
	tok, mintResp := e.mint(t, "stripe", map[string]any{"metadata": "agent=triage"})
	tok2, _ := e.mint(t, "stripe", nil)
	accessor := mintResp.Data["accessor"].(string)

	wantAllowed(t, e.resolve(t, tok, "GET", "/v1/customers/cus_1", "10.1.2.3"))
	wantDenied(t, e.resolve(t, tok, "DELETE", "/v1/customers/cus_1", "10.1.2.3"), resolve.ReasonMethodNotAllowed)
	wantDenied(t, e.resolve(t, tok2, "GET", "/v1/customers", "192.0.2.1"), resolve.ReasonCIDRDenied)
	e.ok(t, logical.ReadOperation, "config", nil)
	e.ok(t, logical.ListOperation, "routes/", nil)
	e.ok(t, logical.ReadOperation, "routes/stripe", nil)
	e.ok(t, logical.ListOperation, "tokens/", nil)
	e.ok(t, logical.ReadOperation, "tokens/"+accessor, nil)
	e.userError(t, logical.UpdateOperation, "routes/bad", map[string]any{
		"upstream": "http://example.com", "allowed_paths": "/x", "allowed_methods": "GET", "credential": testCredential,
	}, "clear text")
	e.userError(t, logical.UpdateOperation, "routes/stripe", map[string]any{"credential": testCredential + "\n"}, "line break")
	e.userError(t, logical.UpdateOperation, "token/stripe", map[string]any{"allowed_methods": "DELETE"}, "wider")
	e.writeRoute(t, "llm", map[string]any{"usage_format": "openai", "token_budget": 10, "max_output_tokens": 5, "rate_limit": "1/1h"})
	tok3, llmMint := e.mint(t, "llm", nil)
	wantAllowed(t, e.resolve(t, tok3, "GET", "/v1/customers", ""))
	wantDenied(t, e.resolve(t, tok3, "GET", "/v1/customers", ""), resolve.ReasonRateLimited)
	e.ok(t, logical.PatchOperation, "usage", map[string]any{"reports": []any{map[string]any{"accessor": llmMint.Data["accessor"], "output_tokens": 10}}})
	e.ok(t, logical.ReadOperation, "routes/llm", nil)
	e.ok(t, logical.ReadOperation, "tokens/"+llmMint.Data["accessor"].(string), nil)
	e.periodic(t)
	e.ok(t, logical.DeleteOperation, "tokens/"+accessor, nil)
	wantDenied(t, e.resolve(t, tok, "GET", "/v1/customers/cus_1", "10.1.2.3"), statusRevoked)

	for _, r := range e.responses {
		raw, err := json.Marshal(r.resp)
		if err != nil {
			t.Fatal(err)
		}
		s := string(raw)
		isAllowedResolve := r.path == "resolve" && r.resp.Data["allowed"] == true
		if strings.Contains(s, testCredential) && !isAllowedResolve {
			t.Errorf("response of %s contains the credential: %s", r.path, s)
		}
		for _, tk := range []string{tok, tok2, tok3} {
			isOwnMint := strings.HasPrefix(r.path, "token/") && r.resp.Data["token"] == tk
			if strings.Contains(s, tk) && !isOwnMint {
				t.Errorf("response of %s contains a token", r.path)
			}
		}
	}

	keys, err := logical.CollectKeys(context.Background(), e.storage)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) < 5 {
		t.Fatalf("expected config, route, salt, token and accessor entries; got %v", keys)
	}
	for _, k := range keys {
		entry, err := e.storage.Get(context.Background(), k)
		if err != nil {
			t.Fatal(err)
		}
		v := k + "=" + string(entry.Value)
		for _, tk := range []string{tok, tok2, tok3} {
			// Neither the token nor its random body may be stored.
			if strings.Contains(v, tk) || strings.Contains(v, tk[len(token.DefaultPrefix):len(tk)-token.ChecksumLen]) {
				t.Errorf("storage entry %s contains a token", k)
			}
		}
		if strings.Contains(v, testCredential) && !strings.HasPrefix(k, routePrefix) {
			t.Errorf("storage entry %s outside %s contains the credential", k, routePrefix)
		}
	}
}

func TestPathHelp(t *testing.T) {
	e := getTestBackend(t)
	for _, p := range []string{"config", "routes/x", "routes/", "token/x", "tokens/", "tokens/abc", "resolve", "usage", "tidy"} {
		resp, err := e.b.HandleRequest(context.Background(), &logical.Request{Operation: logical.HelpOperation, Path: p, Storage: e.storage})
		if err != nil {
			t.Fatalf("help %s: %v", p, err)
		}
		help, _ := resp.Data["help"].(string)
		if len(help) < 100 {
			t.Errorf("help for %s is too thin: %q", p, help)
		}
	}
}

func TestRoutesAreSealWrapped(t *testing.T) {
	e := getTestBackend(t)
	paths := e.b.SpecialPaths()
	if paths == nil || !slices.Equal(paths.SealWrapStorage, []string{routePrefix, exchangePrefix}) {
		t.Fatalf("SealWrapStorage = %v, want [%s %s]", paths, routePrefix, exchangePrefix)
	}
}
