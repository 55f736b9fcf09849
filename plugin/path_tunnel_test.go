package plugin

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/internal/token"
)

// tunnel asks the engine as phantom-proxy does at a CONNECT.
func (e *testEnv) tunnel(t testing.TB, origin, token, ip string) map[string]any {
	t.Helper()
	data := map[string]any{"origin": origin}
	if token != "" {
		data["token"] = token
	}
	if ip != "" {
		data["client_ip"] = ip
	}
	return e.ok(t, logical.PatchOperation, "tunnel", data).Data
}

func TestTunnelWithToken(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "a", map[string]any{"upstream": "https://API.Example.com"})
	e.writeRoute(t, "b", map[string]any{"upstream": "https://b.example.com:8443"})
	e.writeRoute(t, "based", map[string]any{"upstream": "https://api.example.com/v1", "allowed_paths": "/**"})
	e.writeRoute(t, "plain", map[string]any{"upstream": "http://127.0.0.1:8080", "allowed_paths": "/**"})
	e.writeRoute(t, "cidr", map[string]any{"bound_cidrs": "10.0.0.0/8"})
	tokA, mintA := e.mint(t, "a", nil)
	tokB, _ := e.mint(t, "b", nil)
	tokBased, _ := e.mint(t, "based", nil)
	tokPlain, _ := e.mint(t, "plain", nil)
	tokCIDR, _ := e.mint(t, "cidr", nil)

	d := e.tunnel(t, "api.example.com:443", tokA, "127.0.0.1")
	wantAllowed(t, d)
	if d["route"] != "a" || d["accessor"] != mintA.Data["accessor"] {
		t.Fatalf("an allowed tunnel names %v %v", d["route"], d["accessor"])
	}
	wantAllowed(t, e.tunnel(t, "b.example.com:8443", tokB, ""))
	for _, c := range []struct {
		name, origin, token, ip, reason string
	}{
		{"another origin", "b.example.com:8443", tokA, "", resolve.ReasonOriginNotAllowed},
		{"another port", "api.example.com:8443", tokA, "", resolve.ReasonOriginNotAllowed},
		{"the default port of a route with one", "b.example.com:443", tokB, "", resolve.ReasonOriginNotAllowed},
		{"a route with a base path", "api.example.com:443", tokBased, "", resolve.ReasonOriginNotAllowed},
		{"a plain http route", "127.0.0.1:8080", tokPlain, "", resolve.ReasonOriginNotAllowed},
		{"outside bound_cidrs", "api.example.com:443", tokCIDR, "192.0.2.1", resolve.ReasonCIDRDenied},
		{"bound_cidrs and no address", "api.example.com:443", tokCIDR, "", resolve.ReasonCIDRDenied},
		{"not a token", "api.example.com:443", "phm_garbage", "", resolve.ReasonUnknownToken},
		{"a non-canonical origin", "API.example.com:443", tokA, "", resolve.ReasonBadRequest},
		{"no port", "api.example.com", tokA, "", resolve.ReasonBadRequest},
		{"a bad client_ip", "api.example.com:443", tokA, "nope", resolve.ReasonBadRequest},
	} {
		t.Run(c.name, func(t *testing.T) {
			wantDenied(t, e.tunnel(t, c.origin, c.token, c.ip), c.reason)
		})
	}
	wantAllowed(t, e.tunnel(t, "api.example.com:443", tokCIDR, "10.1.2.3"))
}

func TestTunnelDeadTokens(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "a", nil)
	e.writeRoute(t, "gone", nil)
	e.writeRoute(t, "llm", llmRoute(map[string]any{"token_budget": 100, "max_output_tokens": 50}))
	const o = "api.example.com:443"

	expired, _ := e.mint(t, "a", map[string]any{"ttl": "1m"})
	revoked, revokedMint := e.mint(t, "a", nil)
	orphan, _ := e.mint(t, "gone", nil)
	once, _ := e.mint(t, "a", map[string]any{"num_uses": 1})
	budget, budgetMint := e.mint(t, "llm", nil)
	unknown, err := token.New(e.b.rand, token.DefaultPrefix) // well formed, never minted
	if err != nil {
		t.Fatal(err)
	}

	e.revoke(t, revokedMint)
	e.ok(t, logical.DeleteOperation, "routes/gone", nil)
	e.ok(t, logical.UpdateOperation, "routes/gone", map[string]any{"upstream": "https://api.example.com", "allowed_paths": "/**",
		"allowed_methods": "GET", "credential": testCredential}) // the same name again: a new route
	wantAllowed(t, e.resolve(t, once, "GET", "/v1/customers/1", ""))
	report(t, e, map[string]any{"accessor": budgetMint.Data["accessor"], "input_tokens": 100})
	e.clock.Advance(2 * time.Minute)

	for name, c := range map[string]struct{ tok, reason string }{
		"expired":   {expired, resolve.ReasonExpired},
		"revoked":   {revoked, resolve.ReasonRevoked},
		"orphan":    {orphan, resolve.ReasonRouteDeleted},
		"used up":   {once, resolve.ReasonUsesExhausted},
		"spent":     {budget, resolve.ReasonBudgetExhausted},
		"unknown":   {unknown, resolve.ReasonUnknownToken},
		"malformed": {"phm_x", resolve.ReasonUnknownToken},
	} {
		t.Run(name, func(t *testing.T) {
			wantDenied(t, e.tunnel(t, o, c.tok, ""), c.reason)
		})
	}
}

// TestTunnelCountsNothing: a tunnel check takes no use, no rate-limit slot,
// no request or usage, and writes nothing.
func TestTunnelCountsNothing(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "a", map[string]any{"rate_limit": "1/1m"})
	once, mint := e.mint(t, "a", map[string]any{"num_uses": 1})
	accessor := mint.Data["accessor"].(string)
	puts := e.storage.puts.Load()
	for range 5 {
		wantAllowed(t, e.tunnel(t, "api.example.com:443", once, ""))
	}
	if n := e.storage.puts.Load() - puts; n != 0 {
		t.Fatalf("tunnel checks wrote storage %d times", n)
	}
	e.periodic(t) // flushes what usage counters hold
	if rd := e.ok(t, logical.ReadOperation, "tokens/"+accessor, nil).Data; rd["requests"] != uint64(0) || rd["uses"] != 0 {
		t.Fatalf("tunnel checks counted: requests=%v uses=%v", rd["requests"], rd["uses"])
	}
	// Its one use and its one request a minute are still there.
	wantAllowed(t, e.resolve(t, once, "GET", "/v1/customers/1", ""))
	wantDenied(t, e.resolve(t, once, "GET", "/v1/customers/1", ""), resolve.ReasonUsesExhausted)
}

func TestTunnelRateLimitUntouched(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "a", map[string]any{"rate_limit": "1/1m"})
	tok, _ := e.mint(t, "a", nil)
	for range 3 {
		wantAllowed(t, e.tunnel(t, "api.example.com:443", tok, ""))
	}
	wantAllowed(t, e.resolve(t, tok, "GET", "/v1/customers/1", ""))
	wantDenied(t, e.resolve(t, tok, "GET", "/v1/customers/1", ""), resolve.ReasonRateLimited)
}

// countingLists counts List calls: the origins of a CONNECT without a token
// come from memory until a route changes.
type countingLists struct {
	logical.Storage
	lists atomic.Int64
}

func (s *countingLists) List(ctx context.Context, prefix string) ([]string, error) {
	s.lists.Add(1)
	return s.Storage.List(ctx, prefix)
}

func TestTunnelWithoutToken(t *testing.T) {
	e := getTestBackend(t)
	lists := &countingLists{Storage: e.storage.Storage}
	e.storage.Storage = lists
	wantDenied(t, e.tunnel(t, "api.example.com:443", "", ""), resolve.ReasonOriginNotAllowed) // no route at all
	e.writeRoute(t, "a", nil)
	e.writeRoute(t, "based", map[string]any{"upstream": "https://based.example.com/v1", "allowed_paths": "/**"})
	e.writeRoute(t, "port", map[string]any{"upstream": "https://port.example.com:8443"})

	wantAllowed(t, e.tunnel(t, "api.example.com:443", "", ""))
	wantAllowed(t, e.tunnel(t, "port.example.com:8443", "", ""))
	for _, o := range []string{"api.example.com:8443", "port.example.com:443", "based.example.com:443", "evil.example.com:443"} {
		d := e.tunnel(t, o, "", "")
		wantDenied(t, d, resolve.ReasonOriginNotAllowed)
		if len(d) != 3 { // allowed, reason, message: nothing about routes
			t.Fatalf("%s: a denial without a token says %v", o, d)
		}
	}
	before := lists.lists.Load()
	for range 10 {
		wantAllowed(t, e.tunnel(t, "api.example.com:443", "", ""))
	}
	if n := lists.lists.Load() - before; n != 0 {
		t.Fatalf("10 CONNECTs listed routes %d times", n)
	}

	// Route changes are seen at once: an upstream moved, a route deleted,
	// a route written by another node (an invalidation).
	e.writeRoute(t, "a", map[string]any{"upstream": "https://moved.example.com"})
	wantDenied(t, e.tunnel(t, "api.example.com:443", "", ""), resolve.ReasonOriginNotAllowed)
	wantAllowed(t, e.tunnel(t, "moved.example.com:443", "", ""))
	e.ok(t, logical.DeleteOperation, "routes/port", nil)
	wantDenied(t, e.tunnel(t, "port.example.com:8443", "", ""), resolve.ReasonOriginNotAllowed)

	other := newTestEnv(t, e.clock, nil, lists.Storage) // a second node on the same storage
	wantDenied(t, other.tunnel(t, "elsewhere.example.com:443", "", ""), resolve.ReasonOriginNotAllowed)
	e.writeRoute(t, "elsewhere", map[string]any{"upstream": "https://elsewhere.example.com"})
	other.b.invalidate(context.Background(), routePrefix+"elsewhere")
	wantAllowed(t, other.tunnel(t, "elsewhere.example.com:443", "", ""))
}
