package plugin

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/hashicorp/vault/sdk/logical"
)

// cacheSize bounds the entries kept in memory: token records and routes.
const cacheSize = 64 << 10

// Keys read and found absent are remembered too, so a token nobody minted
// (anyone can forge a well-formed one: the checksum is public) costs one
// storage read, not one per request. They are bounded apart from the
// entries, so a flood of forged tokens cannot evict live ones, and in time,
// as a backstop: a write here or an invalidation forgets them at once.
const (
	absentCacheSize = 16 << 10
	absentCacheTTL  = 30 * time.Second
)

// storageCache keeps token records and routes in memory, so resolve (the hot
// path) reads no storage: each storage read is a gRPC round trip to Vault.
//
// It stays exact because every write of these keys in this process goes
// through cachedStorage (backend.HandleRequest wraps every request's
// storage), and writes made elsewhere reach Invalidate. A revoked token is
// therefore refused on its next request, cache or not, and a token minted
// (here, or on the active node and replicated to this one) is known on its
// first request even if its key was remembered as absent.
type storageCache struct {
	entries *lru.Cache[string, []byte]
	decoded *lru.Cache[string, decodedValue] // see decodeShared
	absent  *lru.Cache[string, time.Time]    // keys known absent, until when
	now     func() time.Time

	// mu makes "store what was read, unless a write happened meanwhile"
	// atomic with writes, so a slow read never re-inserts an old value.
	mu     sync.Mutex
	writes uint64

	// routeWrites counts writes and invalidations of routes, so that what
	// is derived from all routes (the tunnel origins, path_tunnel.go) is
	// rebuilt after any change.
	routeWrites atomic.Uint64
}

func newStorageCache(now func() time.Time) *storageCache {
	entries, err := lru.New[string, []byte](cacheSize)
	if err != nil {
		panic(err) // only for a non-positive size
	}
	decoded, err := lru.New[string, decodedValue](cacheSize)
	if err != nil {
		panic(err)
	}
	absent, err := lru.New[string, time.Time](absentCacheSize)
	if err != nil {
		panic(err)
	}
	return &storageCache{entries: entries, decoded: decoded, absent: absent, now: now}
}

// knownAbsent reports whether key was read and found absent recently, with
// no write of it since.
func (c *storageCache) knownAbsent(key string) bool {
	until, ok := c.absent.Get(key)
	if ok && !c.now().Before(until) {
		c.absent.Remove(key) // at worst a fresher entry: one more read
		return false
	}
	return ok
}

// decodedValue is a value decoded from raw, the cached bytes of its key.
type decodedValue struct {
	raw   []byte
	value any
}

// readJSON reads key and decodes its JSON into a new T; nil when absent.
func readJSON[T any](ctx context.Context, s logical.Storage, key string) (*T, error) {
	entry, err := s.Get(ctx, key)
	if err != nil || entry == nil {
		return nil, err
	}
	return decodeJSON[T](entry)
}

// readJSONShared is readJSON for the read-only hot path: see decodeShared.
func readJSONShared[T any](ctx context.Context, s logical.Storage, key string) (*T, error) {
	entry, err := s.Get(ctx, key)
	if err != nil || entry == nil {
		return nil, err
	}
	return decodeShared[T](s, entry)
}

// decodeShared decodes entry's JSON into a new T. When entry came from the
// cache it reuses what an earlier call decoded from the very same bytes (a
// write replaces the bytes, so a memo is never staler than the cache). The
// result is a shallow copy: its slices and maps are shared with the memo,
// so the caller may change its plain fields but only read the rest.
func decodeShared[T any](s logical.Storage, entry *logical.StorageEntry) (*T, error) {
	cs, ok := s.(*cachedStorage)
	if !ok || len(entry.Value) == 0 {
		return decodeJSON[T](entry)
	}
	if d, ok := cs.cache.decoded.Get(entry.Key); ok && sameBytes(d.raw, entry.Value) {
		if v, ok := d.value.(*T); ok {
			c := *v
			return &c, nil
		}
	}
	v, err := decodeJSON[T](entry)
	if err != nil {
		return nil, err
	}
	cs.cache.decoded.Add(entry.Key, decodedValue{raw: entry.Value, value: v})
	c := *v
	return &c, nil
}

func decodeJSON[T any](entry *logical.StorageEntry) (*T, error) {
	v := new(T)
	if err := entry.DecodeJSON(v); err != nil {
		return nil, fmt.Errorf("decoding: %w", err)
	}
	return v, nil
}

// sameBytes reports whether a and b are the same slice, not merely equal.
func sameBytes(a, b []byte) bool {
	return len(a) == len(b) && unsafe.SliceData(a) == unsafe.SliceData(b)
}

func cacheable(key string) bool {
	return strings.HasPrefix(key, tokenPrefix) || strings.HasPrefix(key, routePrefix)
}

// wrote records that key changed to value (nil: deleted).
func (c *storageCache) wrote(key string, value []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes++
	if strings.HasPrefix(key, routePrefix) {
		c.routeWrites.Add(1)
	}
	c.decoded.Remove(key)
	c.absent.Remove(key) // a mint makes its token known at once
	if value == nil {
		c.entries.Remove(key)
		return
	}
	c.entries.Add(key, value)
}

// wrap returns s with reads of cacheable keys served from memory.
func (c *storageCache) wrap(s logical.Storage) logical.Storage {
	if s == nil {
		return nil
	}
	if cs, ok := s.(*cachedStorage); ok {
		return cs
	}
	return &cachedStorage{Storage: s, cache: c}
}

type cachedStorage struct {
	logical.Storage
	cache *storageCache
}

func (s *cachedStorage) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	if !cacheable(key) {
		return s.Storage.Get(ctx, key)
	}
	c := s.cache
	if v, ok := c.entries.Get(key); ok {
		return &logical.StorageEntry{Key: key, Value: v}, nil
	}
	if c.knownAbsent(key) {
		return nil, nil
	}
	c.mu.Lock()
	seen := c.writes
	c.mu.Unlock()
	entry, err := s.Storage.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	if entry == nil {
		c.mu.Lock()
		if c.writes == seen {
			c.absent.Add(key, c.now().Add(absentCacheTTL))
		}
		c.mu.Unlock()
		return nil, nil
	}
	value := append([]byte(nil), entry.Value...)
	c.mu.Lock()
	if c.writes == seen {
		c.entries.Add(key, value)
	}
	c.mu.Unlock()
	return entry, nil
}

func (s *cachedStorage) Put(ctx context.Context, entry *logical.StorageEntry) error {
	if err := s.Storage.Put(ctx, entry); err != nil {
		if cacheable(entry.Key) {
			s.cache.wrote(entry.Key, nil) // the outcome is unknown: forget it
		}
		return err
	}
	if cacheable(entry.Key) {
		s.cache.wrote(entry.Key, append([]byte(nil), entry.Value...))
	}
	return nil
}

func (s *cachedStorage) Delete(ctx context.Context, key string) error {
	err := s.Storage.Delete(ctx, key)
	if cacheable(key) {
		s.cache.wrote(key, nil)
	}
	return err
}
