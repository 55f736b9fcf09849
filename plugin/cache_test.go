package plugin

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

func TestResolveReadsNoStorageWhenWarm(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "r", nil)
	tok, _ := e.mint(t, "r", nil)
	before := e.storage.gets.Load()
	for range 20 {
		wantAllowed(t, e.resolve(t, tok, "GET", "/v1/customers", ""))
	}
	if n := e.storage.gets.Load() - before; n != 0 {
		t.Fatalf("warm resolves read storage %d times", n)
	}
}

// A write made elsewhere (another node, replication) reaches the engine as an
// invalidation; the next resolve must see it.
func TestInvalidationReachesResolve(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "r", nil)
	tok, _ := e.mint(t, "r", nil)
	wantAllowed(t, e.resolve(t, tok, "GET", "/v1/customers", ""))

	tokenHMAC := mustHMAC(t, e, tok)
	rec, err := getToken(context.Background(), e.storage, tokenHMAC)
	if err != nil {
		t.Fatal(err)
	}
	rec.RevokedAt = e.clock.Now()
	if err := putToken(context.Background(), e.storage.Storage, tokenHMAC, rec); err != nil { // behind the cache's back
		t.Fatal(err)
	}
	e.b.InvalidateKey(context.Background(), tokenPrefix+tokenHMAC)
	wantDenied(t, e.resolve(t, tok, "GET", "/v1/customers", ""), statusRevoked)

	// Routes too: a credential rotated elsewhere.
	route, err := getRoute(context.Background(), e.storage, "r")
	if err != nil {
		t.Fatal(err)
	}
	route.Credential = "sk_live_rotated_elsewhere"
	if err := putRoute(context.Background(), e.storage.Storage, "r", route); err != nil {
		t.Fatal(err)
	}
	e.b.InvalidateKey(context.Background(), routePrefix+"r")
	fresh, _ := e.mint(t, "r", nil)
	if d := e.resolve(t, fresh, "GET", "/v1/customers", ""); d["credential"] != "sk_live_rotated_elsewhere" {
		t.Fatal("resolve used a stale route after invalidation")
	}
}

// Revocations racing with resolves: once revoke has returned, no resolve may
// allow the token, whatever the cache held.
func TestRevokeRacingResolves(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "r", nil)
	for range 20 {
		tok, mint := e.mint(t, "r", nil)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					e.b.HandleRequest(context.Background(), &logical.Request{
						Operation: logical.UpdateOperation, Path: "resolve", Storage: e.storage,
						Data: map[string]any{"token": tok, "method": "GET", "path": "/v1/customers"},
					})
				}
			}()
		}
		time.Sleep(time.Millisecond)
		e.revoke(t, mint)
		wantDenied(t, e.resolve(t, tok, "GET", "/v1/customers", ""), statusRevoked)
		close(stop)
		wg.Wait()
		wantDenied(t, e.resolve(t, tok, "GET", "/v1/customers", ""), statusRevoked)
	}
}
