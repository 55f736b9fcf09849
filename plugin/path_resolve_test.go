package plugin

import (
	"crypto/rand"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/internal/token"
)

func TestResolveAllowed(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "r", map[string]any{
		"auth_type": "header", "auth_header": "x-api-key", "auth_format": "Key {{credential}}",
		"headers": map[string]any{"anthropic-version": "2023-06-01"},
	})
	tok, mint := e.mint(t, "r", nil)

	d := e.resolve(t, tok, "POST", "/v1/customers/cus_1", "")
	wantAllowed(t, d)
	want := map[string]any{
		"route": "r", "accessor": mint.Data["accessor"], "upstream": "https://api.example.com", "credential": testCredential,
		"auth_type": "header", "auth_name": "x-api-key", "auth_format": "Key {{credential}}", "expires_at": mint.Data["expires_at"],
	}
	for k, v := range want {
		if d[k] != v {
			t.Errorf("%s = %v, want %v", k, d[k], v)
		}
	}
	if d["headers"].(map[string]string)["anthropic-version"] != "2023-06-01" {
		t.Errorf("headers = %v", d["headers"])
	}
}

// TestResolveByWrite: `vault write phantom/resolve` (an update) answers as
// the proxy's PATCH does.
func TestResolveByWrite(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "r", nil)
	tok, _ := e.mint(t, "r", nil)
	in := map[string]any{"token": tok, "method": "GET", "path": "/v1/customers/cus_1"}
	byPatch := e.ok(t, logical.PatchOperation, "resolve", in).Data
	byWrite := e.ok(t, logical.UpdateOperation, "resolve", in).Data
	wantAllowed(t, byWrite)
	for k, v := range byPatch {
		if k != "headers" && byWrite[k] != v {
			t.Errorf("%s: write gave %v, patch %v", k, byWrite[k], v)
		}
	}
	in["path"] = "/v2/other"
	wantDenied(t, e.ok(t, logical.UpdateOperation, "resolve", in).Data, resolve.ReasonPathNotAllowed)
}

func TestResolveInjectionDefaults(t *testing.T) {
	e := getTestBackend(t)
	for _, tc := range []struct {
		extra             map[string]any
		wantName, wantFmt string
	}{
		{nil, "Authorization", "Bearer {{credential}}"},
		{map[string]any{"auth_type": "basic"}, "Authorization", "{{credential}}:"},
		{map[string]any{"auth_type": "query", "auth_query_param": "key"}, "key", "{{credential}}"},
		{map[string]any{"auth_type": "header", "auth_header": "x-goog-api-key"}, "x-goog-api-key", "{{credential}}"},
	} {
		e.writeRoute(t, "r", tc.extra)
		tok, _ := e.mint(t, "r", nil)
		d := e.resolve(t, tok, "GET", "/v1/customers", "")
		wantAllowed(t, d)
		if d["auth_name"] != tc.wantName || d["auth_format"] != tc.wantFmt {
			t.Errorf("%v: got %v %q", tc.extra, d["auth_name"], d["auth_format"])
		}
	}
}

func TestResolveDenials(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "r", map[string]any{"bound_cidrs": "10.0.0.0/8"})
	e.writeRoute(t, "other", map[string]any{"allowed_paths": "/v2/**"})
	tok, _ := e.mint(t, "r", map[string]any{"allowed_paths": "/v1/customers/cus_1", "allowed_methods": "GET", "bound_cidrs": "10.1.0.0/16"})
	otherTok, _ := e.mint(t, "other", nil)
	unknown, err := token.New(e.b.rand, token.DefaultPrefix)
	if err != nil {
		t.Fatal(err)
	}
	tampered := tok[:len(tok)-1] + string("0123456789"[(tok[len(tok)-1]-'0'+1)%10])

	tests := []struct {
		name                    string
		token, method, path, ip string
		reason                  string
	}{
		{"allowed baseline", tok, "GET", "/v1/customers/cus_1", "10.1.2.3", ""},
		{"unknown token", unknown, "GET", "/v1/customers/cus_1", "10.1.2.3", resolve.ReasonUnknownToken},
		{"garbage token", "sk_live_not_a_phantom_token", "GET", "/v1/customers/cus_1", "10.1.2.3", resolve.ReasonUnknownToken},
		{"tampered checksum", tampered, "GET", "/v1/customers/cus_1", "10.1.2.3", resolve.ReasonUnknownToken},
		{"empty token", "", "GET", "/v1/customers/cus_1", "10.1.2.3", resolve.ReasonBadRequest},
		{"token-narrowed method", tok, "POST", "/v1/customers/cus_1", "10.1.2.3", resolve.ReasonMethodNotAllowed},
		{"route-denied method", tok, "DELETE", "/v1/customers/cus_1", "10.1.2.3", resolve.ReasonMethodNotAllowed},
		{"lower-case method", tok, "get", "/v1/customers/cus_1", "10.1.2.3", resolve.ReasonBadRequest},
		{"token-narrowed path", tok, "GET", "/v1/customers/cus_2", "10.1.2.3", resolve.ReasonPathNotAllowed},
		{"route-denied path", tok, "GET", "/v1/refunds", "10.1.2.3", resolve.ReasonPathNotAllowed},
		{"case variant", tok, "GET", "/v1/Customers/cus_1", "10.1.2.3", resolve.ReasonPathNotAllowed},
		{"trailing slash", tok, "GET", "/v1/customers/cus_1/", "10.1.2.3", resolve.ReasonPathNotAllowed},
		{"route A token on route B path", otherTok, "GET", "/v1/customers/cus_1", "", resolve.ReasonPathNotAllowed},
		{"dot segments", tok, "GET", "/v1/customers/cus_1/../../admin", "10.1.2.3", resolve.ReasonBadRequest},
		{"encoded slash", tok, "GET", "/v1/customers/cus_1%2F..%2Fadmin", "10.1.2.3", resolve.ReasonBadRequest},
		{"encoded dots", tok, "GET", "/v1/customers/%2e%2e/x", "10.1.2.3", resolve.ReasonBadRequest},
		{"double slash", tok, "GET", "/v1//customers/cus_1", "10.1.2.3", resolve.ReasonBadRequest},
		{"NUL", tok, "GET", "/v1/customers/cus_1%00", "10.1.2.3", resolve.ReasonBadRequest},
		{"query in path", tok, "GET", "/v1/customers/cus_1?x=1", "10.1.2.3", resolve.ReasonBadRequest},
		{"outside token cidr", tok, "GET", "/v1/customers/cus_1", "10.2.0.1", resolve.ReasonCIDRDenied},
		{"outside route cidr", tok, "GET", "/v1/customers/cus_1", "192.0.2.1", resolve.ReasonCIDRDenied},
		{"no client ip", tok, "GET", "/v1/customers/cus_1", "", resolve.ReasonCIDRDenied},
		{"bad client ip", tok, "GET", "/v1/customers/cus_1", "10.1.2.300", resolve.ReasonBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := e.resolve(t, tt.token, tt.method, tt.path, tt.ip)
			if tt.reason == "" {
				wantAllowed(t, d)
				return
			}
			wantDenied(t, d, tt.reason)
			if d["message"] == "" {
				t.Error("no message")
			}
		})
	}
}

func TestResolveExpiredButUnrevoked(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "r", nil)
	tok, _ := e.mint(t, "r", map[string]any{"ttl": "1h"})
	e.clock.Advance(59 * time.Minute)
	wantAllowed(t, e.resolve(t, tok, "GET", "/v1/customers", ""))
	// Vault has not revoked the lease yet; the engine refuses by itself.
	e.clock.Advance(time.Minute)
	wantDenied(t, e.resolve(t, tok, "GET", "/v1/customers", ""), statusExpired)
}

func TestResolveSeesRouteChangesAtOnce(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "r", nil)
	tok, _ := e.mint(t, "r", nil)

	// Rotation: the next resolve hands out the new credential.
	e.ok(t, logical.UpdateOperation, "routes/r", map[string]any{"credential": "sk_live_rotated"})
	if d := e.resolve(t, tok, "GET", "/v1/customers", ""); d["credential"] != "sk_live_rotated" {
		t.Fatalf("credential after rotation: %v", d["credential"] == testCredential)
	}
	// Narrowing the route narrows live tokens.
	e.ok(t, logical.UpdateOperation, "routes/r", map[string]any{"allowed_methods": "POST"})
	wantDenied(t, e.resolve(t, tok, "GET", "/v1/customers", ""), resolve.ReasonMethodNotAllowed)
	e.ok(t, logical.UpdateOperation, "routes/r", map[string]any{"allowed_methods": "GET", "allowed_paths": "/v1/charges/*"})
	wantDenied(t, e.resolve(t, tok, "GET", "/v1/customers", ""), resolve.ReasonPathNotAllowed)

	// Deleting the route kills its tokens, and re-creating it does not revive them.
	e.ok(t, logical.DeleteOperation, "routes/r", nil)
	wantDenied(t, e.resolve(t, tok, "GET", "/v1/charges/ch_1", ""), statusRouteDeleted)
	e.writeRoute(t, "r", nil)
	wantDenied(t, e.resolve(t, tok, "GET", "/v1/customers", ""), statusRouteDeleted)
	fresh, _ := e.mint(t, "r", nil)
	wantAllowed(t, e.resolve(t, fresh, "GET", "/v1/customers", ""))
}

func TestResolveDoesNotWriteOnTheCommonPath(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "r", nil)
	tok, _ := e.mint(t, "r", nil)
	e.resolve(t, tok, "GET", "/v1/customers", "") // first use may create nothing either
	before := e.storage.puts.Load()
	for range 50 {
		wantAllowed(t, e.resolve(t, tok, "GET", "/v1/customers", ""))
		wantDenied(t, e.resolve(t, tok, "DELETE", "/v1/customers", ""), resolve.ReasonMethodNotAllowed)
	}
	if n := e.storage.puts.Load() - before; n != 0 {
		t.Fatalf("resolve wrote storage %d times", n)
	}

	// Usage still counts, from memory, and survives a flush.
	acc := e.resolve(t, tok, "GET", "/v1/customers", "")["accessor"].(string)
	if got := e.ok(t, logical.ReadOperation, "tokens/"+acc, nil).Data["requests"]; got != uint64(52) {
		t.Fatalf("requests before flush = %v", got)
	}
	e.periodic(t)
	if got := e.ok(t, logical.ReadOperation, "tokens/"+acc, nil).Data["requests"]; got != uint64(52) {
		t.Fatalf("requests after flush = %v", got)
	}
	stored, err := getToken(t.Context(), e.storage, mustHMAC(t, e, tok))
	if err != nil || stored.Requests != 52 || stored.LastUsedAt.IsZero() {
		t.Fatalf("flushed record: %+v %v", stored, err)
	}
}

func TestNumUsesExactUnderConcurrency(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "r", nil)
	tok, _ := e.mint(t, "r", map[string]any{"num_uses": 10})

	var allowed, exhausted atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			resp, err := e.b.HandleRequest(t.Context(), &logical.Request{
				Operation: logical.UpdateOperation, Path: "resolve", Storage: e.storage,
				Data: map[string]any{"token": tok, "method": "GET", "path": "/v1/customers"},
			})
			switch {
			case err != nil:
				t.Error(err)
			case resp.Data["allowed"] == true:
				allowed.Add(1)
			case resp.Data["reason"] == statusExhausted:
				exhausted.Add(1)
			default:
				t.Errorf("unexpected answer %v", resp.Data)
			}
		}()
	}
	close(start)
	wg.Wait()
	if allowed.Load() != 10 || exhausted.Load() != 90 {
		t.Fatalf("allowed %d, exhausted %d; want 10 and 90", allowed.Load(), exhausted.Load())
	}
	wantDenied(t, e.resolve(t, tok, "GET", "/v1/customers", ""), statusExhausted)
}

func TestNumUsesCountsOnlyAllowedRequests(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "r", nil)
	tok, _ := e.mint(t, "r", map[string]any{"num_uses": 2})
	wantDenied(t, e.resolve(t, tok, "DELETE", "/v1/customers", ""), resolve.ReasonMethodNotAllowed)
	d := e.resolve(t, tok, "GET", "/v1/customers", "")
	wantAllowed(t, d)
	if d["uses_remaining"] != 1 {
		t.Fatalf("uses_remaining %v", d["uses_remaining"])
	}
	wantAllowed(t, e.resolve(t, tok, "GET", "/v1/customers", ""))
	wantDenied(t, e.resolve(t, tok, "GET", "/v1/customers", ""), statusExhausted)
}

func mustHMAC(t *testing.T, e *testEnv, token string) string {
	t.Helper()
	h, err := e.b.hmacToken(t.Context(), e.storage, token)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// TestResolveBatch: each request of a batch gets the decision it would get
// alone, in order, and num_uses counts every one of them.
func TestResolveBatch(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "r", nil)
	tok, mint := e.mint(t, "r", nil)
	limited, _ := e.mint(t, "r", map[string]any{"num_uses": 2})
	e.writeRoute(t, "other", map[string]any{"credential": "sk_live_other"})
	other, _ := e.mint(t, "other", nil)
	unknown, err := token.New(rand.Reader, "phm_")
	if err != nil {
		t.Fatal(err)
	}
	req := func(tok, method, path string) map[string]any {
		return map[string]any{"token": tok, "method": method, "path": path, "client_ip": "127.0.0.1"}
	}
	resp := e.ok(t, logical.PatchOperation, "resolve", map[string]any{"requests": []any{
		req(tok, "GET", "/v1/customers/cus_1"),
		req(tok, "DELETE", "/v1/customers/cus_1"),
		req(tok, "GET", "/v2/elsewhere"),
		req(unknown, "GET", "/v1/customers/cus_1"),
		map[string]any{"token": tok, "method": 7, "path": "/v1/customers/cus_1"},
		"not an object",
		req(limited, "GET", "/v1/customers/cus_1"),
		req(limited, "GET", "/v1/customers/cus_1"),
		req(limited, "GET", "/v1/customers/cus_1"),
		req(other, "DELETE", "/v1/customers/cus_1"),
	}})
	results, _ := resp.Data["results"].([]map[string]any)
	if len(results) != 10 {
		t.Fatalf("results: %v", resp.Data)
	}
	wantAllowed(t, results[0])
	if results[0]["route"] != "r" || results[0]["accessor"] != mint.Data["accessor"] || results[0]["credential"] != nil {
		t.Errorf("allowed result: %v", results[0])
	}
	// Each allowed route's grant comes once; a route only denied sends none.
	routes, _ := resp.Data["routes"].(map[string]any)
	grant, _ := routes["r"].(map[string]any)
	if len(routes) != 1 || grant["credential"] != testCredential || grant["upstream"] != "https://api.example.com" {
		t.Errorf("routes: %v", routes)
	}
	for i, reason := range map[int]string{
		1: resolve.ReasonMethodNotAllowed, 2: resolve.ReasonPathNotAllowed, 3: resolve.ReasonUnknownToken,
		4: resolve.ReasonBadRequest, 5: resolve.ReasonBadRequest, 8: statusExhausted, 9: resolve.ReasonMethodNotAllowed,
	} {
		wantDenied(t, results[i], reason)
	}
	wantAllowed(t, results[6])
	wantAllowed(t, results[7])
	if resp.Data["token"] != nil || resp.Data["allowed"] != nil {
		t.Errorf("a batch answer carries single-request fields: %v", resp.Data)
	}

	e.userError(t, logical.PatchOperation, "resolve", map[string]any{
		"token": tok, "requests": []any{req(tok, "GET", "/v1/customers/cus_1")},
	}, "not both")
	many := make([]any, resolve.MaxBatch+1)
	for i := range many {
		many[i] = req(tok, "GET", "/v1/customers/cus_1")
	}
	e.userError(t, logical.PatchOperation, "resolve", map[string]any{"requests": many}, "at most")
}

// TestTokenStatusesAreReasons: a token's status is its deny reason, so
// every status but active is one of the contract's reasons.
func TestTokenStatusesAreReasons(t *testing.T) {
	for _, st := range []string{statusExpired, statusRevoked, statusRouteDeleted, statusExhausted} {
		if !resolve.Known(st) {
			t.Errorf("token status %q is not a deny reason of internal/resolve", st)
		}
	}
}

// TestMethodsTheProxyRefuses: a route or token cannot allow a method the
// proxy would never forward.
func TestMethodsTheProxyRefuses(t *testing.T) {
	e := getTestBackend(t)
	for _, m := range []string{"M-SEARCH", "X_CUSTOM", "GET1"} {
		e.userError(t, logical.UpdateOperation, "routes/r", map[string]any{
			"upstream": "https://api.example.com", "allowed_paths": "/v1/**", "allowed_methods": m, "credential": testCredential,
		}, "not an HTTP method")
	}
	e.writeRoute(t, "r", nil)
	e.userError(t, logical.UpdateOperation, "token/r", map[string]any{"allowed_methods": "M-SEARCH"}, "not an HTTP method")
}
