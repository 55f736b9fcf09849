package scrub

import (
	"strconv"
	"time"

	"github.com/phantomvault/phantom/internal/ttlcache"
)

// Cache keeps the scrubbers of recently used credentials, so a request does
// not rebuild the patterns of its key. Entries expire, so a key rotated away
// does not linger in memory. It is safe for concurrent use.
type Cache struct {
	lru *ttlcache.Cache[string, *Scrubber]
}

// NewCache returns an empty cache.
func NewCache() *Cache {
	return &Cache{lru: ttlcache.New[string, *Scrubber](1024, 5*time.Minute)}
}

// For returns New(credential, wires...), built once for the same
// credential and wires until it expires.
func (c *Cache) For(credential string, wires ...Wire) *Scrubber {
	key := cacheKey(credential, wires)
	if s, ok := c.lru.Get(key); ok {
		return s
	}
	s := New(credential, wires...)
	c.lru.Add(key, s)
	return s
}

// cacheKey holds every input of New, each string after its length, so that
// no two inputs share a key whatever bytes they hold.
func cacheKey(credential string, wires []Wire) string {
	k := strconv.AppendInt(nil, int64(len(credential)), 10)
	k = append(append(k, ':'), credential...)
	for _, w := range wires {
		k = strconv.AppendBool(append(k, '|'), w.EncodingsOnly)
		k = strconv.AppendInt(append(k, ','), int64(w.MaxLen), 10)
		k = strconv.AppendInt(append(k, ','), int64(len(w.Value)), 10)
		k = append(append(k, ':'), w.Value...)
	}
	return string(k)
}

// Sweep removes expired scrubbers from memory; an expired one is never
// returned, swept or not.
func (c *Cache) Sweep() { c.lru.Sweep() }

// Purge forgets every scrubber.
func (c *Cache) Purge() { c.lru.Purge() }
