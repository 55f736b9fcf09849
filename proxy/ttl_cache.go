package proxy

import (
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
)

// ttlCache is a bounded LRU whose entries expire. Unlike golang-lru's
// expirable LRU it starts no goroutine of its own (that one can never be
// stopped): an expired entry is a miss when read, and sweep, which the
// Server calls while it serves, removes them from memory.
type ttlCache[K comparable, V any] struct {
	lru *lru.Cache[K, ttlEntry[V]]
	ttl time.Duration
}

type ttlEntry[V any] struct {
	v       V
	expires time.Time
}

func newTTLCache[K comparable, V any](size int, ttl time.Duration) *ttlCache[K, V] {
	c, err := lru.New[K, ttlEntry[V]](size)
	if err != nil {
		panic(err) // only for a size below 1, a programming error
	}
	return &ttlCache[K, V]{lru: c, ttl: ttl}
}

func (c *ttlCache[K, V]) Get(k K) (V, bool) {
	e, ok := c.lru.Get(k)
	if !ok || time.Now().After(e.expires) {
		var zero V
		return zero, false
	}
	return e.v, true
}

// Add stores v under k for the cache's ttl from now.
func (c *ttlCache[K, V]) Add(k K, v V) {
	c.lru.Add(k, ttlEntry[V]{v: v, expires: time.Now().Add(c.ttl)})
}

// Remove forgets k.
func (c *ttlCache[K, V]) Remove(k K) { c.lru.Remove(k) }

func (c *ttlCache[K, V]) Contains(k K) bool {
	_, ok := c.Get(k)
	return ok
}

// sweep removes expired entries.
func (c *ttlCache[K, V]) sweep() {
	now := time.Now()
	for _, k := range c.lru.Keys() {
		if e, ok := c.lru.Peek(k); ok && now.After(e.expires) {
			c.lru.Remove(k)
		}
	}
}

func (c *ttlCache[K, V]) Purge() { c.lru.Purge() }
