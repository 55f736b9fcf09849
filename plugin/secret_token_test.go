package plugin

import (
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// renew sends the request Vault's expiration manager sends for
// `vault lease renew [-increment=...]`.
func (e *testEnv) renew(t *testing.T, mint *logical.Response, increment time.Duration) (*logical.Response, error) {
	t.Helper()
	secret := *mint.Secret
	secret.Increment = increment
	return e.b.HandleRequest(t.Context(), &logical.Request{
		Operation: logical.RenewOperation, Path: "token/r", Secret: &secret, Storage: e.storage,
	})
}

func (e *testEnv) revoke(t *testing.T, mint *logical.Response) {
	t.Helper()
	resp, err := e.b.HandleRequest(t.Context(), &logical.Request{
		Operation: logical.RevokeOperation, Path: "token/r", Secret: mint.Secret, Storage: e.storage,
	})
	if err != nil || resp.IsError() {
		t.Fatalf("revoke: %v %v", resp, err)
	}
}

func TestRenewExtendsWithinMaxTTL(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "r", map[string]any{"ttl": "1h", "max_ttl": "3h"})
	tok, mint := e.mint(t, "r", map[string]any{"max_ttl": "3h"})

	e.clock.Advance(50 * time.Minute)
	resp, err := e.renew(t, mint, 0)
	if err != nil || resp.IsError() || resp.Secret.TTL != time.Hour {
		t.Fatalf("renew: %v %v", resp, err)
	}
	e.clock.Advance(50 * time.Minute) // past the original expiry
	wantAllowed(t, e.resolve(t, tok, "GET", "/v1/customers", ""))

	resp, err = e.renew(t, mint, 2*time.Hour) // 1h40m in: only 1h20m left
	if err != nil || resp.IsError() || resp.Secret.TTL != 80*time.Minute || len(resp.Warnings) == 0 {
		t.Fatalf("capped renew: ttl=%v warnings=%v err=%v", resp.Secret.TTL, resp.Warnings, err)
	}
	e.clock.Advance(80*time.Minute - time.Second)
	wantAllowed(t, e.resolve(t, tok, "GET", "/v1/customers", ""))
	e.clock.Advance(time.Second)
	wantDenied(t, e.resolve(t, tok, "GET", "/v1/customers", ""), statusExpired)
	if resp, err := e.renew(t, mint, 0); err != nil || !resp.IsError() {
		t.Fatalf("renew past max_ttl: %v %v", resp, err)
	}
}

func TestRevoke(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "r", nil)
	tok, mint := e.mint(t, "r", nil)
	other, _ := e.mint(t, "r", nil)

	e.revoke(t, mint)
	wantDenied(t, e.resolve(t, tok, "GET", "/v1/customers", ""), statusRevoked)
	wantAllowed(t, e.resolve(t, other, "GET", "/v1/customers", ""))
	e.revoke(t, mint) // idempotent, as Vault may retry
	if resp, err := e.renew(t, mint, 0); err != nil || !resp.IsError() {
		t.Fatalf("renewing a revoked token: %v %v", resp, err)
	}
}

func TestRevokeAfterRouteDeleted(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "r", nil)
	tok, mint := e.mint(t, "r", nil)
	e.ok(t, logical.DeleteOperation, "routes/r", nil)
	e.revoke(t, mint) // InternalData suffices without the route
	wantDenied(t, e.resolve(t, tok, "GET", "/v1/customers", ""), statusRevoked)
	if resp, err := e.renew(t, mint, 0); err != nil || !resp.IsError() {
		t.Fatalf("renewing a token of a deleted route: %v %v", resp, err)
	}
}

func TestLeaseWithoutTokenReference(t *testing.T) {
	e := getTestBackend(t)
	for _, internal := range []map[string]any{
		{"secret_type": secretTokenType},
		{"secret_type": secretTokenType, internalAccessor: 42, internalTokenHMAC: "x"},
	} {
		_, err := e.b.HandleRequest(t.Context(), &logical.Request{
			Operation: logical.RevokeOperation, Path: "token/r", Storage: e.storage,
			Secret: &logical.Secret{InternalData: internal},
		})
		if err == nil {
			t.Errorf("revoke with InternalData %v succeeded", internal)
		}
	}
}

// TestRenewCannotStretchPastTheMintBound: Vault lets any token renew a lease
// whose ID it knows, so the bound fixed at mint must hold whoever renews and
// whatever increment they ask for.
func TestRenewCannotStretchPastTheMintBound(t *testing.T) {
	e := getTestBackend(t) // the test mount's max lease TTL is 48h
	e.writeRoute(t, "r", nil)
	tok, mint := e.mint(t, "r", map[string]any{"ttl": "30s"})

	e.clock.Advance(10 * time.Second)
	resp, err := e.renew(t, mint, 768*time.Hour)
	if err != nil || resp.IsError() || resp.Secret.TTL != 20*time.Second || len(resp.Warnings) == 0 {
		t.Fatalf("renew by a stranger: ttl=%v warnings=%v err=%v", resp.Secret.TTL, resp.Warnings, err)
	}
	e.clock.Advance(20 * time.Second)
	wantDenied(t, e.resolve(t, tok, "GET", "/v1/customers", ""), statusExpired)
	if resp, err := e.renew(t, mint, time.Hour); err != nil || !resp.IsError() {
		t.Fatalf("renew at the bound: %v %v", resp, err)
	}

	// With room asked for at mint, renewals extend up to it and no further.
	tok, mint = e.mint(t, "r", map[string]any{"ttl": "30s", "max_ttl": "2m"})
	e.clock.Advance(20 * time.Second)
	if resp, err := e.renew(t, mint, 768*time.Hour); err != nil || resp.Secret.TTL != 100*time.Second {
		t.Fatalf("renew within max_ttl: %v %v", resp, err)
	}
	e.clock.Advance(100*time.Second - time.Second)
	wantAllowed(t, e.resolve(t, tok, "GET", "/v1/customers", ""))
	e.clock.Advance(time.Second)
	wantDenied(t, e.resolve(t, tok, "GET", "/v1/customers", ""), statusExpired)
}

// A stranger's short increment must not cut a token's life either: Vault
// would set the lease to it, so it is refused.
func TestRenewNeverShortens(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "r", nil)
	tok, mint := e.mint(t, "r", map[string]any{"ttl": "1h", "max_ttl": "2h"})
	resp, err := e.renew(t, mint, time.Second)
	if err != nil || !resp.IsError() || !strings.Contains(resp.Error().Error(), "never shortens") {
		t.Fatalf("renew with a 1s increment: %v %v", resp, err)
	}
	e.clock.Advance(30 * time.Minute)
	wantAllowed(t, e.resolve(t, tok, "GET", "/v1/customers", ""))
	// What is left, or no increment, is fine.
	for _, inc := range []time.Duration{30 * time.Minute, 0} {
		if resp, err := e.renew(t, mint, inc); err != nil || resp.IsError() || resp.Secret.TTL < 30*time.Minute {
			t.Fatalf("renew with increment %v: %v %v", inc, resp, err)
		}
	}
}

// Raising the route's max_ttl after mint never extends a token; lowering it
// bounds renewals of live tokens.
func TestRenewFollowsOnlyLowerRouteMax(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "r", map[string]any{"max_ttl": "4h"})
	_, raised := e.mint(t, "r", map[string]any{"ttl": "1m", "max_ttl": "1h"})
	_, lowered := e.mint(t, "r", map[string]any{"ttl": "1m", "max_ttl": "4h"})
	e.ok(t, logical.UpdateOperation, "config", map[string]any{"max_ttl": "40h"})
	e.ok(t, logical.UpdateOperation, "routes/r", map[string]any{"max_ttl": "40h"})
	if resp, _ := e.renew(t, raised, 10*time.Hour); resp.IsError() || resp.Secret.TTL != time.Hour {
		t.Fatalf("after raising the route's max_ttl: %v", resp)
	}
	e.ok(t, logical.UpdateOperation, "routes/r", map[string]any{"max_ttl": "30m"})
	if resp, _ := e.renew(t, lowered, 10*time.Hour); resp.IsError() || resp.Secret.TTL != 30*time.Minute {
		t.Fatalf("after lowering the route's max_ttl: %v", resp)
	}
}

// The bound is kept twice, in the token record and in the lease, and the
// earlier wins; a record minted before bounds existed gets the engine's
// finite default, never the mount's maximum.
func TestRenewBoundSources(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "r", nil)
	tok, mint := e.mint(t, "r", map[string]any{"ttl": "1m"})
	tokenHMAC := mustHMAC(t, e, tok)
	rec, err := getToken(t.Context(), e.storage, tokenHMAC)
	if err != nil || rec.MaxExpiresAt.IsZero() {
		t.Fatalf("record: %+v %v", rec, err)
	}

	rec.MaxExpiresAt = rec.IssuedAt.Add(10 * time.Hour) // the record says more than the lease
	// Behind the cache's back, then announced.
	if err := putToken(t.Context(), e.storage, tokenHMAC, rec); err != nil {
		t.Fatal(err)
	}
	e.b.InvalidateKey(t.Context(), tokenPrefix+tokenHMAC)
	if resp, _ := e.renew(t, mint, 10*time.Hour); resp.IsError() || resp.Secret.TTL != time.Minute {
		t.Fatalf("lease bound ignored: %v", resp)
	}

	rec.MaxExpiresAt = time.Time{} // as minted by an older version
	// Behind the cache's back, then announced.
	if err := putToken(t.Context(), e.storage, tokenHMAC, rec); err != nil {
		t.Fatal(err)
	}
	e.b.InvalidateKey(t.Context(), tokenPrefix+tokenHMAC)
	legacy := *mint.Secret
	legacy.InternalData = maps.Clone(mint.Secret.InternalData)
	delete(legacy.InternalData, internalMaxExpiresAt)
	legacy.Increment = 768 * time.Hour
	resp, err := e.b.HandleRequest(t.Context(), &logical.Request{Operation: logical.RenewOperation, Path: "token/r", Secret: &legacy, Storage: e.storage})
	if err != nil || resp.IsError() || resp.Secret.TTL != DefaultTokenMaxTTL {
		t.Fatalf("legacy renew: ttl=%v, want the engine's default max %v (%v)", resp.Secret.TTL, DefaultTokenMaxTTL, err)
	}
}
