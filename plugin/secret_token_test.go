package plugin

import (
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
	tok, mint := e.mint(t, "r", nil)

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
