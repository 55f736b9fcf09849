package plugin

import (
	"context"
	"crypto/rand"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/phantomvault/phantom/internal/token"
)

// listingStorage records the longest answer to List the engine received,
// for one shard of the index and for any other directory: what it held in
// memory at once.
type listingStorage struct {
	logical.Storage

	mu               sync.Mutex
	maxShard, maxAny int
}

func (s *listingStorage) List(ctx context.Context, prefix string) ([]string, error) {
	keys, err := s.Storage.List(ctx, prefix)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.maxAny = max(s.maxAny, len(keys))
	if strings.HasPrefix(prefix, accessorsPrefix) && prefix != accessorsPrefix {
		s.maxShard = max(s.maxShard, len(keys))
	}
	return keys, err
}

func (s *listingStorage) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.maxShard, s.maxAny = 0, 0
}

// listTokens returns one page of LIST tokens/.
func (e *testEnv) listTokens(t testing.TB, data map[string]any) []string {
	t.Helper()
	keys, _ := e.ok(t, logical.ListOperation, "tokens/", data).Data["keys"].([]string)
	return keys
}

// listAllTokens pages through LIST tokens/ and checks each page's size.
func (e *testEnv) listAllTokens(t testing.TB, limit int) []string {
	t.Helper()
	var all []string
	for {
		data := map[string]any{"limit": limit}
		if len(all) > 0 {
			data["after"] = all[len(all)-1]
		}
		page := e.listTokens(t, data)
		if len(page) > limit {
			t.Fatalf("a page of %d keys for limit %d", len(page), limit)
		}
		if len(page) == 0 {
			return all
		}
		all = append(all, page...)
	}
}

// writeTokens stores records of n tokens of route r and their index
// entries, in the old layout when legacy, as an engine would have. Those
// with dead set expired two hours ago. It returns the accessors, sorted.
func writeTokens(t testing.TB, e *testEnv, s logical.Storage, n int, legacy, dead bool) []string {
	t.Helper()
	ctx := t.Context()
	now := e.clock.Now()
	accessors := make([]string, n)
	for i := range accessors {
		accessor, err := token.NewAccessor(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tokenHMAC := fmt.Sprintf("hmac-%s", accessor)
		rec := &tokenEntry{Accessor: accessor, Route: "r", IssuedAt: now.Add(-3 * time.Hour), ExpiresAt: now.Add(time.Hour)}
		if dead {
			rec.ExpiresAt = now.Add(-2 * time.Hour)
		}
		if err := putToken(ctx, s, tokenHMAC, rec); err != nil {
			t.Fatal(err)
		}
		if legacy {
			writeLegacyAccessor(t, s, accessor, tokenHMAC)
		} else if err := putAccessor(ctx, s, accessor, tokenHMAC); err != nil {
			t.Fatal(err)
		}
		accessors[i] = accessor
	}
	slices.Sort(accessors)
	return accessors
}

// writeLegacyAccessor indexes a token as v0.2.0 did.
func writeLegacyAccessor(t testing.TB, s logical.Storage, accessor, tokenHMAC string) {
	t.Helper()
	entry, err := logical.StorageEntryJSON(accessorPrefix+accessor, accessorEntry{TokenHMAC: tokenHMAC})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(t.Context(), entry); err != nil {
		t.Fatal(err)
	}
}

// TestListAndTidyArePaged: on a mount of 20000 tokens, listing returns every
// accessor once and in order a page at a time, and neither listing nor tidy
// ever asks storage for more than one shard of the index at once.
func TestListAndTidyArePaged(t *testing.T) {
	storage := &listingStorage{Storage: &logical.InmemStorage{}}
	e := newTestEnv(t, &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}, rand.Reader, storage)
	const live, dead = 18000, 2000
	want := writeTokens(t, e, storage, live, false, false)
	gone := writeTokens(t, e, storage, dead, false, true)
	all := slices.Concat(want, gone)
	slices.Sort(all)

	// The largest List answer: one shard, or the names of the shards (the
	// first character after pha_ is 0-7, so at most 8*62 of them).
	bounded := func(what string) {
		t.Helper()
		t.Logf("%s: the longest List answers were %d keys of a shard and %d keys in all, of %d tokens", what, storage.maxShard, storage.maxAny, len(all))
		if storage.maxShard == 0 || storage.maxShard >= 100 || storage.maxAny > 8*62 {
			t.Fatalf("%s: storage listed %d keys of a shard and %d keys at once, of %d tokens", what, storage.maxShard, storage.maxAny, len(all))
		}
		storage.reset()
	}

	if got := e.listAllTokens(t, 500); !slices.Equal(got, all) {
		t.Fatalf("paging listed %d accessors, want the %d in order", len(got), len(all))
	}
	bounded("list")

	n := e.ok(t, logical.UpdateOperation, "tidy", nil).Data["tokens_removed"].(int)
	if n != dead {
		t.Fatalf("tidy removed %d records, want the %d dead ones", n, dead)
	}
	bounded("tidy")
	if got := e.listAllTokens(t, maxListLimit); !slices.Equal(got, want) {
		t.Fatalf("after tidy %d accessors are listed, want the %d live ones", len(got), len(want))
	}
}

func TestListTokensLimitAndAfter(t *testing.T) {
	e := getTestBackend(t)
	accessors := writeTokens(t, e, e.storage, defaultListLimit+3, false, false)

	if page := e.listTokens(t, nil); !slices.Equal(page, accessors[:defaultListLimit]) {
		t.Fatalf("first page: %d keys", len(page))
	}
	rest := e.listTokens(t, map[string]any{"after": accessors[defaultListLimit-1]})
	if !slices.Equal(rest, accessors[defaultListLimit:]) {
		t.Fatalf("second page: %v", rest)
	}
	if page := e.listTokens(t, map[string]any{"after": accessors[5], "limit": 2}); !slices.Equal(page, accessors[6:8]) {
		t.Fatalf("after %s: %v", accessors[5], page)
	}
	// after need not be a listed accessor: a prefix lists from there.
	if page := e.listTokens(t, map[string]any{"after": "pha_", "limit": 1}); !slices.Equal(page, accessors[:1]) {
		t.Fatalf("after pha_: %v", page)
	}
	if page := e.listTokens(t, map[string]any{"after": accessors[len(accessors)-1]}); len(page) != 0 {
		t.Fatalf("after the last: %v", page)
	}
	for _, bad := range []any{0, -1, maxListLimit + 1} {
		e.userError(t, logical.ListOperation, "tokens/", map[string]any{"limit": bad}, "limit must be between 1 and 10000")
	}
	e.userError(t, logical.ListOperation, "tokens/", map[string]any{"limit": "many"}, `field "limit"`)
}

// TestOldLayoutIndex: tokens indexed by v0.2.0 (accessor/<accessor>) are
// listed, read, revoked and tidied like the others, and tidy moves the live
// ones into the shards.
func TestOldLayoutIndex(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "r", nil)
	ctx := t.Context()
	var old []string
	var minted []*logical.Response
	for range 3 {
		_, mint := e.mint(t, "r", map[string]any{"ttl": "2h"})
		accessor := mint.Data["accessor"].(string)
		tokenHMAC, err := lookupAccessor(ctx, e.storage, accessor)
		if err != nil || tokenHMAC == "" {
			t.Fatalf("minted %s not indexed: %v", accessor, err)
		}
		if err := deleteAccessor(ctx, e.storage, accessor); err != nil {
			t.Fatal(err)
		}
		writeLegacyAccessor(t, e.storage, accessor, tokenHMAC)
		old = append(old, accessor)
		minted = append(minted, mint)
	}
	// One moved halfway: in both layouts.
	both := writeTokens(t, e, e.storage, 1, false, false)[0]
	writeLegacyAccessor(t, e.storage, both, "hmac-"+both)
	_, fresh := e.mint(t, "r", nil)
	all := slices.Concat(old, []string{both, fresh.Data["accessor"].(string)})
	slices.Sort(all)
	if got := e.listAllTokens(t, 2); !slices.Equal(got, all) {
		t.Fatalf("listed %v, want %v", got, all)
	}

	// Read, revoke by accessor and by lease.
	if d := e.ok(t, logical.ReadOperation, "tokens/"+old[0], nil).Data; d["status"] != statusActive {
		t.Fatalf("read old-layout token: %v", d)
	}
	e.ok(t, logical.DeleteOperation, "tokens/"+old[0], nil)
	e.revoke(t, minted[1])
	for _, a := range old[:2] {
		if d := e.ok(t, logical.ReadOperation, "tokens/"+a, nil).Data; d["status"] != statusRevoked {
			t.Fatalf("revoked old-layout token %s: %v", a, d)
		}
	}

	// Tidy moves the entries it keeps, the revoked ones too until they are
	// due, which it then removes.
	if n := e.ok(t, logical.UpdateOperation, "tidy", nil).Data["tokens_removed"].(int); n != 0 {
		t.Fatalf("tidy removed %d fresh records", n)
	}
	if keys, err := e.storage.List(ctx, accessorPrefix); err != nil || len(keys) != 0 {
		t.Fatalf("old layout after tidy: %v %v", keys, err)
	}
	for _, a := range append([]string{both}, old...) {
		key, _ := accessorKey(a)
		if entry, err := e.storage.Get(ctx, key); err != nil || entry == nil {
			t.Fatalf("%s not moved to %s: %v", a, key, err)
		}
	}
	if got := e.listAllTokens(t, 2); !slices.Equal(got, all) {
		t.Fatalf("after tidy listed %v, want %v", got, all)
	}
	e.clock.Advance(time.Hour + time.Minute)
	if n := e.ok(t, logical.UpdateOperation, "tidy", nil).Data["tokens_removed"].(int); n != 2 {
		t.Fatalf("tidy removed %d records, want the 2 revoked", n)
	}
	if got := e.listAllTokens(t, 2); len(got) != len(all)-2 || slices.Contains(got, old[0]) || slices.Contains(got, old[1]) {
		t.Fatalf("after the second tidy listed %v", got)
	}
	if resp, err := e.request(t, logical.ReadOperation, "tokens/"+old[0], nil); resp != nil || err != nil {
		t.Fatalf("tidied old-layout token still read: %v %v", resp, err)
	}
}
