package plugin

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/sdk/helper/locksutil"
	"github.com/hashicorp/vault/sdk/logical"
)

// usageCounter keeps per-token request counts in memory so that resolve, the
// hot path, never writes storage for them; flushUsage persists them.
type usageCounter struct {
	m sync.Map // token HMAC -> *usage
}

type usage struct {
	requests atomic.Uint64
	lastUsed atomic.Int64 // unix nanoseconds
}

func newUsageCounter() *usageCounter { return &usageCounter{} }

func (c *usageCounter) record(tokenHMAC string, at time.Time) {
	v, ok := c.m.Load(tokenHMAC)
	if !ok {
		v, _ = c.m.LoadOrStore(tokenHMAC, new(usage))
	}
	u := v.(*usage)
	u.requests.Add(1)
	u.lastUsed.Store(at.UnixNano())
}

// pending returns the counts not yet flushed for a token.
func (c *usageCounter) pending(tokenHMAC string) (requests uint64, lastUsed time.Time) {
	v, ok := c.m.Load(tokenHMAC)
	if !ok {
		return 0, time.Time{}
	}
	u := v.(*usage)
	if ns := u.lastUsed.Load(); ns != 0 {
		lastUsed = time.Unix(0, ns).UTC()
	}
	return u.requests.Load(), lastUsed
}

func (c *usageCounter) forget(tokenHMAC string) { c.m.Delete(tokenHMAC) }

// flushUsage adds the in-memory counts to the stored token records. Counts
// that cannot be written are put back for the next flush.
func (b *backend) flushUsage(ctx context.Context, s logical.Storage) error {
	var firstErr error
	b.usage.m.Range(func(k, v any) bool {
		tokenHMAC, u := k.(string), v.(*usage)
		n := u.requests.Swap(0)
		if n == 0 {
			return true
		}
		if err := b.addUsage(ctx, s, tokenHMAC, n, time.Unix(0, u.lastUsed.Load()).UTC()); err != nil {
			u.requests.Add(n)
			if firstErr == nil {
				firstErr = err
			}
		}
		return true
	})
	return firstErr
}

func (b *backend) addUsage(ctx context.Context, s logical.Storage, tokenHMAC string, n uint64, lastUsed time.Time) error {
	lock := locksutil.LockForKey(b.tokenLocks, tokenHMAC)
	lock.Lock()
	defer lock.Unlock()

	t, err := getToken(ctx, s, tokenHMAC)
	if err != nil {
		return err
	}
	if t == nil {
		b.usage.forget(tokenHMAC)
		return nil
	}
	t.Requests += n
	if lastUsed.After(t.LastUsedAt) {
		t.LastUsedAt = lastUsed
	}
	return putToken(ctx, s, tokenHMAC, t)
}
