package plugin

import (
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// TestOAuth2EndpointEchoesNoSecretToTheProxy: an endpoint that hands back,
// as the access token, the refresh token it just rotated to or the client's
// Basic credential is refused: neither may reach the proxy. (Found by an
// independent attack.)
func TestOAuth2EndpointEchoesNoSecretToTheProxy(t *testing.T) {
	te := newTokenEndpoint(t)
	clock := &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	e := newOAuth2Env(t, clock, &logical.InmemStorage{})
	e.writeOAuth2Route(t, "api", authOAuth2RefreshToken, te.URL, nil)
	tok, _ := e.mint(t, "api", nil)
	for _, mode := range []string{"rotecho", "basicecho"} {
		te.set(func(te *tokenEndpoint) { te.mode = mode })
		d := e.resolve(t, tok, "GET", "/v1/things", "")
		wantDenied(t, d, "credential_exchange_failed")
		if !strings.Contains(d["message"].(string), "secrets") {
			t.Fatalf("%s: %v", mode, d["message"])
		}
		clock.Advance(exchangeBackoff)
	}
}

// TestOAuth2SlowEndpointHoldsABatchOnce: a batch of resolves on a route
// whose endpoint hangs waits once, for the call's budget, not once per
// request: the other routes' requests in the batch are answered before the
// proxy's deadline. (Found by an independent attack.)
func TestOAuth2SlowEndpointHoldsABatchOnce(t *testing.T) {
	te := newTokenEndpoint(t)
	clock := &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	e := newOAuth2Env(t, clock, &logical.InmemStorage{})
	e.b.exchanges.wait = 50 * time.Millisecond
	e.writeOAuth2Route(t, "slow", authOAuth2RefreshToken, te.URL, nil)
	e.writeRoute(t, "plain", nil)
	slow, _ := e.mint(t, "slow", nil)
	plain, _ := e.mint(t, "plain", nil)
	te.set(func(te *tokenEndpoint) { te.mode = "block" })
	var items []any
	for range 10 {
		items = append(items, map[string]any{"token": slow, "method": "GET", "path": "/v1/things"})
	}
	items = append(items, map[string]any{"token": plain, "method": "GET", "path": "/v1/customers/cus_1"})
	before := e.b.exchanges.waits.Load()
	d := e.ok(t, logical.PatchOperation, "resolve", map[string]any{"requests": items}).Data
	results := d["results"].([]map[string]any)
	for _, r := range results[:10] {
		if r["reason"] != "credential_exchange_failed" {
			t.Fatalf("a request on the slow route: %v", r)
		}
	}
	if results[10]["allowed"] != true {
		t.Fatalf("the plain route's request: %v", results[10])
	}
	if waited := e.b.exchanges.waits.Load() - before; waited != 1 {
		t.Fatalf("%d requests of one call waited on the fetch, want 1", waited)
	}
}
