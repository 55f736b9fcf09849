package ttlcache

import (
	"testing"
	"time"
)

func TestCache(t *testing.T) {
	c := New[string, int](2, 20*time.Millisecond)
	c.Add("a", 1)
	if v, ok := c.Get("a"); !ok || v != 1 {
		t.Fatalf("Get(a) = %v, %v", v, ok)
	}
	c.Add("b", 2)
	c.Add("c", 3) // evicts a, the least recently used
	if c.Contains("a") {
		t.Fatal("the cache outgrew its size")
	}
	time.Sleep(30 * time.Millisecond)
	if c.Contains("b") || c.Contains("c") {
		t.Fatal("an expired entry was returned")
	}
	if c.lru.Len() != 2 {
		t.Fatalf("%d entries before the sweep, want 2", c.lru.Len())
	}
	c.Sweep()
	if c.lru.Len() != 0 {
		t.Fatalf("%d entries after the sweep, want 0: an expired key stays in memory", c.lru.Len())
	}
}
