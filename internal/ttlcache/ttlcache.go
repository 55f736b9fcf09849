// Package ttlcache is a bounded LRU whose entries expire.
package ttlcache

import (
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// Cache is a bounded LRU whose entries expire. Unlike golang-lru's
// expirable LRU it starts no goroutine of its own (that one can never be
// stopped): an expired entry is a miss when read, and Sweep, which its
// owner calls from time to time, removes them from memory.
type Cache[K comparable, V any] struct {
	lru *lru.Cache[K, entry[V]]
	ttl time.Duration
}

type entry[V any] struct {
	v       V
	expires time.Time
}

// New returns a cache of at most size entries, each kept for ttl.
func New[K comparable, V any](size int, ttl time.Duration) *Cache[K, V] {
	c, err := lru.New[K, entry[V]](size)
	if err != nil {
		panic(err) // only for a size below 1, a programming error
	}
	return &Cache[K, V]{lru: c, ttl: ttl}
}

// Get returns k's value unless it is absent or expired.
func (c *Cache[K, V]) Get(k K) (V, bool) {
	e, ok := c.lru.Get(k)
	if !ok || time.Now().After(e.expires) {
		var zero V
		return zero, false
	}
	return e.v, true
}

// Add stores v under k for the cache's ttl from now.
func (c *Cache[K, V]) Add(k K, v V) {
	c.lru.Add(k, entry[V]{v: v, expires: time.Now().Add(c.ttl)})
}

// Remove forgets k.
func (c *Cache[K, V]) Remove(k K) { c.lru.Remove(k) }

// Contains reports whether Get would find k.
func (c *Cache[K, V]) Contains(k K) bool {
	_, ok := c.Get(k)
	return ok
}

// Sweep removes expired entries.
func (c *Cache[K, V]) Sweep() {
	now := time.Now()
	for _, k := range c.lru.Keys() {
		if e, ok := c.lru.Peek(k); ok && now.After(e.expires) {
			c.lru.Remove(k)
		}
	}
}

// Purge removes every entry.
func (c *Cache[K, V]) Purge() { c.lru.Purge() }
