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

// TestDecodeSharedFollowsWrites: a memoized decode serves repeated reads, a
// caller's change to its copy never reaches the memo, and a write (here or
// announced by Invalidate) is seen at once.
func TestDecodeSharedFollowsWrites(t *testing.T) {
	ctx := context.Background()
	c := newStorageCache()
	inner := &logical.InmemStorage{}
	s := c.wrap(inner)
	put := func(st logical.Storage, uses int) {
		t.Helper()
		if err := putToken(ctx, st, "h", &tokenEntry{Accessor: "a", Uses: uses, AllowedPaths: []string{"/x"}}); err != nil {
			t.Fatal(err)
		}
	}
	read := func() *tokenEntry {
		t.Helper()
		tok, err := getTokenShared(ctx, s, "h")
		if err != nil || tok == nil {
			t.Fatalf("read: %v %v", tok, err)
		}
		return tok
	}
	put(s, 1)
	first := read()
	first.Uses = 99 // a caller's change to its copy
	if again := read(); again.Uses != 1 || again.AllowedPaths[0] != "/x" {
		t.Fatalf("memo changed by a caller: %+v", again)
	}
	put(s, 2)
	if got := read(); got.Uses != 2 {
		t.Fatalf("after a write: uses=%d, want 2", got.Uses)
	}
	put(inner, 3) // behind the cache's back, then announced
	c.wrote(tokenPrefix+"h", nil)
	if got := read(); got.Uses != 3 {
		t.Fatalf("after an invalidation: uses=%d, want 3", got.Uses)
	}
}
