package plugin

import (
	"context"
	"strings"
	"sync"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/hashicorp/vault/sdk/logical"
)

// cacheSize bounds the entries kept in memory: token records and routes.
const cacheSize = 64 << 10

// storageCache keeps token records and routes in memory, so resolve (the hot
// path) reads no storage: each storage read is a gRPC round trip to Vault.
//
// It stays exact because every write of these keys in this process goes
// through cachedStorage (backend.HandleRequest wraps every request's
// storage), and writes made elsewhere reach Invalidate. A revoked token is
// therefore refused on its next request, cache or not.
type storageCache struct {
	entries *lru.Cache[string, []byte]

	// mu makes "store what was read, unless a write happened meanwhile"
	// atomic with writes, so a slow read never re-inserts an old value.
	mu     sync.Mutex
	writes uint64
}

func newStorageCache() *storageCache {
	entries, err := lru.New[string, []byte](cacheSize)
	if err != nil {
		panic(err) // only for a non-positive size
	}
	return &storageCache{entries: entries}
}

func cacheable(key string) bool {
	return strings.HasPrefix(key, tokenPrefix) || strings.HasPrefix(key, routePrefix)
}

// wrote records that key changed to value (nil: deleted).
func (c *storageCache) wrote(key string, value []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes++
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
	c.mu.Lock()
	seen := c.writes
	c.mu.Unlock()
	entry, err := s.Storage.Get(ctx, key)
	if err != nil || entry == nil {
		return entry, err
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
