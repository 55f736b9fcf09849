package plugin

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/internal/token"
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
	c := newStorageCache(time.Now)
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

// TestForgedTokenCostsOneRead: anyone can forge a well-formed token (the
// checksum is public); repeating one must not cost a storage read each time.
func TestForgedTokenCostsOneRead(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "r", nil)
	forged, err := token.New(rand.Reader, token.DefaultPrefix)
	if err != nil {
		t.Fatal(err)
	}
	wantDenied(t, e.resolve(t, forged, "GET", "/v1/customers", ""), resolve.ReasonUnknownToken)
	before := e.storage.gets.Load()
	for range 20 {
		wantDenied(t, e.resolve(t, forged, "GET", "/v1/customers", ""), resolve.ReasonUnknownToken)
	}
	batch := make([]any, resolve.MaxBatch)
	for i := range batch {
		batch[i] = map[string]any{"token": forged, "method": "GET", "path": "/v1/customers"}
	}
	e.ok(t, logical.PatchOperation, "resolve", map[string]any{"requests": batch})
	if n := e.storage.gets.Load() - before; n != 0 {
		t.Fatalf("%d repeated resolves of a forged token read storage %d times", 20+resolve.MaxBatch, n)
	}

	// Absence is remembered for a while only.
	e.clock.Advance(absentCacheTTL)
	wantDenied(t, e.resolve(t, forged, "GET", "/v1/customers", ""), resolve.ReasonUnknownToken)
	if n := e.storage.gets.Load() - before; n != 1 {
		t.Fatalf("after absentCacheTTL: %d reads, want 1", n)
	}
}

// switchableRandom lets a test decide the next random bytes of a backend.
type switchableRandom struct {
	mu sync.Mutex
	r  io.Reader
}

func (s *switchableRandom) Read(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.r.Read(p)
}

func (s *switchableRandom) next(b []byte) {
	s.mu.Lock()
	s.r = io.MultiReader(bytes.NewReader(b), rand.Reader)
	s.mu.Unlock()
}

// TestMintForgetsNegativeLookup: a token looked up before it was minted (only
// possible with a predictable random source, as here) is known at once after
// the mint, on the node that minted it, and on another node as soon as the
// write reaches it as an invalidation (or, as a backstop, after
// absentCacheTTL).
func TestMintForgetsNegativeLookup(t *testing.T) {
	clock := &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	random := &switchableRandom{r: rand.Reader}
	shared := &logical.InmemStorage{}
	active := newTestEnv(t, clock, random, shared)
	standby := newTestEnv(t, clock, rand.Reader, shared)
	active.writeRoute(t, "r", nil)

	seed := make([]byte, 32)
	if _, err := rand.Read(seed); err != nil {
		t.Fatal(err)
	}
	predicted, err := token.New(bytes.NewReader(seed), token.DefaultPrefix)
	if err != nil {
		t.Fatal(err)
	}
	for _, node := range []*testEnv{active, standby} {
		wantDenied(t, node.resolve(t, predicted, "GET", "/v1/customers", ""), resolve.ReasonUnknownToken)
		before := node.storage.gets.Load()
		wantDenied(t, node.resolve(t, predicted, "GET", "/v1/customers", ""), resolve.ReasonUnknownToken)
		if node.storage.gets.Load() != before {
			t.Fatal("the unknown token was not remembered as unknown")
		}
	}

	random.next(seed)
	if tok, _ := active.mint(t, "r", nil); tok != predicted {
		t.Fatal("the mint did not use the scripted random bytes")
	}
	wantAllowed(t, active.resolve(t, predicted, "GET", "/v1/customers", ""))

	// The standby has not heard of the write yet: still unknown, from memory.
	wantDenied(t, standby.resolve(t, predicted, "GET", "/v1/customers", ""), resolve.ReasonUnknownToken)
	standby.b.InvalidateKey(t.Context(), tokenPrefix+mustHMAC(t, standby, predicted))
	wantAllowed(t, standby.resolve(t, predicted, "GET", "/v1/customers", ""))

	// Without the invalidation, absentCacheTTL bounds the wait.
	seed[0]++
	predicted, _ = token.New(bytes.NewReader(seed), token.DefaultPrefix)
	wantDenied(t, standby.resolve(t, predicted, "GET", "/v1/customers", ""), resolve.ReasonUnknownToken)
	random.next(seed)
	active.mint(t, "r", nil)
	wantDenied(t, standby.resolve(t, predicted, "GET", "/v1/customers", ""), resolve.ReasonUnknownToken)
	clock.Advance(absentCacheTTL)
	wantAllowed(t, standby.resolve(t, predicted, "GET", "/v1/customers", ""))
}

// A flood of forged tokens fills only the bounded absent set: live entries
// stay cached.
func TestAbsentKeysCannotEvictLiveEntries(t *testing.T) {
	ctx := context.Background()
	c := newStorageCache(time.Now)
	s := c.wrap(&logical.InmemStorage{})
	if err := putToken(ctx, s, "live", &tokenEntry{Accessor: "a"}); err != nil {
		t.Fatal(err)
	}
	for i := range absentCacheSize + 100 {
		if got, err := s.Get(ctx, tokenPrefix+"forged"+strconv.Itoa(i)); err != nil || got != nil {
			t.Fatalf("forged %d: %v %v", i, got, err)
		}
	}
	if c.absent.Len() != absentCacheSize {
		t.Fatalf("absent set holds %d keys, want its bound %d", c.absent.Len(), absentCacheSize)
	}
	if _, ok := c.entries.Get(tokenPrefix + "live"); !ok {
		t.Fatal("forged lookups evicted a live token record")
	}
}
