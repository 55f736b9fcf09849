package plugin

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/sdk/helper/locksutil"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/phantomvault/phantom/internal/limits"
)

// usageCounter keeps per-token usage in memory so that resolve, the hot
// path, never writes storage for it; flushUsage persists it (periodic, about
// once a minute). Per-route totals are the sums of their tokens' counts,
// added to the route's record as each token's counts are flushed.
type usageCounter struct {
	m          sync.Map // token HMAC -> *usage
	byAccessor sync.Map // accessor -> token HMAC, for usage reports

	mu     sync.Mutex
	routes map[routeKey]*usageTotals // flushed from tokens, not yet added to route-usage/
}

// routeKey names one life of a route: a route deleted and created again
// under the same name starts its totals afresh.
type routeKey struct{ name, id string }

// usage is one token's counts. requests is what the record does not hold
// yet; the LLM token counts are the token's whole totals (the record's when
// the entry was made, plus every report since), so a budget is checked
// against memory alone, and flushed* is how much of them storage holds.
type usage struct {
	requests atomic.Uint64
	lastUsed atomic.Int64 // unix nanoseconds

	route                                         routeKey
	accessor                                      string
	input, output, estimated                      atomic.Int64
	flushedInput, flushedOutput, flushedEstimated atomic.Int64

	mu sync.Mutex // orders flushes with catching up (catchUp)

	res reservations // budget held by requests in flight (budget.go)
}

// spent is the LLM tokens the token has used, as far as u knows.
func (u *usage) spent() int64 { return limits.SatAdd(u.input.Load(), u.output.Load()) }

// catchUp adds to u what the token's record t holds beyond what this
// process flushed: usage that another node wrote (the active node, before
// leadership came back here). Records only grow, so a record read before
// one of this process's own flushes holds no more and adds nothing.
func (u *usage) catchUp(t *tokenEntry) {
	if t.InputTokens <= u.flushedInput.Load() && t.OutputTokens <= u.flushedOutput.Load() && t.Estimated <= u.flushedEstimated.Load() {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.catchUpLocked(t)
}

func (u *usage) catchUpLocked(t *tokenEntry) {
	for _, c := range [...]struct {
		stored         int64
		total, flushed *atomic.Int64
	}{
		{t.InputTokens, &u.input, &u.flushedInput},
		{t.OutputTokens, &u.output, &u.flushedOutput},
		{t.Estimated, &u.estimated, &u.flushedEstimated},
	} {
		if d := c.stored - c.flushed.Load(); d > 0 {
			limits.AddSat(c.total, d)
			c.flushed.Add(d)
		}
	}
}

// usageTotals are counts as records and reads show them.
type usageTotals struct {
	Requests     uint64 `json:"requests"`
	InputTokens  int64  `json:"input_tokens"`
	OutputTokens int64  `json:"output_tokens"`
	Estimated    int64  `json:"estimated_responses"`
}

func (u *usageTotals) add(o usageTotals) {
	u.Requests += o.Requests
	u.InputTokens = limits.SatAdd(u.InputTokens, o.InputTokens)
	u.OutputTokens = limits.SatAdd(u.OutputTokens, o.OutputTokens)
	u.Estimated = limits.SatAdd(u.Estimated, o.Estimated)
}

func (u *usageTotals) data() map[string]any {
	return map[string]any{
		"requests": u.Requests, "input_tokens": u.InputTokens, "output_tokens": u.OutputTokens,
		"estimated_responses": u.Estimated,
	}
}

func newUsageCounter() *usageCounter { return &usageCounter{routes: map[routeKey]*usageTotals{}} }

// entry returns the token's counts, made from its record t when new.
func (c *usageCounter) entry(tokenHMAC string, t *tokenEntry) *usage {
	if v, ok := c.m.Load(tokenHMAC); ok {
		return v.(*usage)
	}
	u := &usage{route: routeKey{t.Route, t.RouteID}, accessor: t.Accessor}
	u.input.Store(t.InputTokens)
	u.output.Store(t.OutputTokens)
	u.estimated.Store(t.Estimated)
	u.flushedInput.Store(t.InputTokens)
	u.flushedOutput.Store(t.OutputTokens)
	u.flushedEstimated.Store(t.Estimated)
	v, loaded := c.m.LoadOrStore(tokenHMAC, u)
	if !loaded {
		c.byAccessor.Store(t.Accessor, tokenHMAC)
	}
	return v.(*usage)
}

// record counts one allowed request of the token whose record is t.
func (c *usageCounter) record(tokenHMAC string, t *tokenEntry, at time.Time) {
	u := c.entry(tokenHMAC, t)
	u.requests.Add(1)
	u.lastUsed.Store(at.UnixNano())
}

// spent is the LLM tokens the token has used, reports not yet flushed
// included.
func (c *usageCounter) spent(tokenHMAC string, t *tokenEntry) int64 {
	if v, ok := c.m.Load(tokenHMAC); ok {
		u := v.(*usage)
		u.catchUp(t)
		return u.spent()
	}
	return limits.SatAdd(t.InputTokens, t.OutputTokens)
}

// totals returns the token's counts, stored and pending, and when it was
// last used.
func (c *usageCounter) totals(tokenHMAC string, t *tokenEntry) (usageTotals, time.Time) {
	tot := usageTotals{Requests: t.Requests, InputTokens: t.InputTokens, OutputTokens: t.OutputTokens, Estimated: t.Estimated}
	lastUsed := t.LastUsedAt
	v, ok := c.m.Load(tokenHMAC)
	if !ok {
		return tot, lastUsed
	}
	u := v.(*usage)
	u.catchUp(t)
	tot.Requests += u.requests.Load()
	tot.InputTokens, tot.OutputTokens, tot.Estimated = u.input.Load(), u.output.Load(), u.estimated.Load()
	if ns := u.lastUsed.Load(); ns != 0 && time.Unix(0, ns).After(lastUsed) {
		lastUsed = time.Unix(0, ns).UTC()
	}
	return tot, lastUsed
}

// pendingForRoute is what memory holds of a route's totals that its
// route-usage record does not.
func (c *usageCounter) pendingForRoute(k routeKey) usageTotals {
	var tot usageTotals
	c.m.Range(func(_, v any) bool {
		if u := v.(*usage); u.route == k {
			tot.add(u.unflushed())
		}
		return true
	})
	c.mu.Lock()
	if p := c.routes[k]; p != nil {
		tot.add(*p)
	}
	c.mu.Unlock()
	return tot
}

// unflushed is what u holds that the token's record does not.
func (u *usage) unflushed() usageTotals {
	return usageTotals{
		Requests:     u.requests.Load(),
		InputTokens:  u.input.Load() - u.flushedInput.Load(),
		OutputTokens: u.output.Load() - u.flushedOutput.Load(),
		Estimated:    u.estimated.Load() - u.flushedEstimated.Load(),
	}
}

func (c *usageCounter) forget(tokenHMAC string) {
	if v, ok := c.m.LoadAndDelete(tokenHMAC); ok {
		c.byAccessor.CompareAndDelete(v.(*usage).accessor, tokenHMAC)
	}
}

// lookupTokenHMAC returns the HMAC of the token with this accessor, from
// memory when the token was used lately, else from storage ("" if none).
func (b *backend) lookupTokenHMAC(ctx context.Context, s logical.Storage, accessor string) (string, error) {
	if v, ok := b.usage.byAccessor.Load(accessor); ok {
		if _, live := b.usage.m.Load(v.(string)); live {
			return v.(string), nil
		}
		b.usage.byAccessor.Delete(accessor)
	}
	return lookupAccessor(ctx, s, accessor)
}

// flushUsage adds the in-memory counts to the stored token records, then
// the tokens' counts to their routes' totals. Counts that cannot be written
// stay in memory for the next flush.
func (b *backend) flushUsage(ctx context.Context, s logical.Storage) error {
	var firstErr error
	b.usage.m.Range(func(k, v any) bool {
		if err := b.flushToken(ctx, s, k.(string), v.(*usage)); err != nil && firstErr == nil {
			firstErr = err
		}
		return true
	})
	if err := b.flushRouteUsage(ctx, s); err != nil && firstErr == nil {
		firstErr = err
	}
	return firstErr
}

// flushToken writes what memory holds of one token's usage to its record.
func (b *backend) flushToken(ctx context.Context, s logical.Storage, tokenHMAC string, u *usage) error {
	lock := locksutil.LockForKey(b.tokenLocks, tokenHMAC)
	lock.Lock()
	defer lock.Unlock()

	if u.unflushed() == (usageTotals{}) {
		return nil
	}
	t, err := getToken(ctx, s, tokenHMAC)
	if err != nil {
		return err
	}
	if t == nil {
		b.usage.forget(tokenHMAC)
		return nil
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.catchUpLocked(t)
	d := u.unflushed()
	n := u.requests.Swap(0)
	d.Requests = n
	t.Requests += n
	t.InputTokens = limits.SatAdd(t.InputTokens, d.InputTokens)
	t.OutputTokens = limits.SatAdd(t.OutputTokens, d.OutputTokens)
	t.Estimated = limits.SatAdd(t.Estimated, d.Estimated)
	if lastUsed := time.Unix(0, u.lastUsed.Load()).UTC(); n > 0 && lastUsed.After(t.LastUsedAt) {
		t.LastUsedAt = lastUsed
	}
	if err := putToken(ctx, s, tokenHMAC, t); err != nil {
		u.requests.Add(n)
		return err
	}
	u.flushedInput.Add(d.InputTokens)
	u.flushedOutput.Add(d.OutputTokens)
	u.flushedEstimated.Add(d.Estimated)

	b.usage.mu.Lock()
	p := b.usage.routes[u.route]
	if p == nil {
		p = new(usageTotals)
		b.usage.routes[u.route] = p
	}
	p.add(d)
	b.usage.mu.Unlock()
	return nil
}

// routeUsagePrefix is where per-route totals are kept, apart from the
// seal-wrapped route records (they are not secret, and change often).
const routeUsagePrefix = "route-usage/" // route-usage/<route name> -> routeUsageEntry

// routeUsageEntry is the totals of one life of a route.
type routeUsageEntry struct {
	RouteID string `json:"route_id"`
	usageTotals
}

func getRouteUsage(ctx context.Context, s logical.Storage, name, routeID string) (*routeUsageEntry, error) {
	r, err := readJSON[routeUsageEntry](ctx, s, routeUsagePrefix+name)
	if err != nil {
		return nil, fmt.Errorf("reading usage of route %q: %w", name, err)
	}
	if r == nil || r.RouteID != routeID {
		return &routeUsageEntry{RouteID: routeID}, nil
	}
	return r, nil
}

// flushRouteUsage adds the flushed tokens' counts to their routes' totals.
func (b *backend) flushRouteUsage(ctx context.Context, s logical.Storage) error {
	b.usage.mu.Lock()
	pending := b.usage.routes
	b.usage.routes = map[routeKey]*usageTotals{}
	b.usage.mu.Unlock()

	var firstErr error
	for k, d := range pending {
		if err := b.addRouteUsage(ctx, s, k, *d); err != nil {
			b.usage.mu.Lock()
			p := b.usage.routes[k]
			if p == nil {
				p = new(usageTotals)
				b.usage.routes[k] = p
			}
			p.add(*d)
			b.usage.mu.Unlock()
			if firstErr == nil {
				firstErr = err
			}
		}
	}
	return firstErr
}

func (b *backend) addRouteUsage(ctx context.Context, s logical.Storage, k routeKey, d usageTotals) error {
	lock := locksutil.LockForKey(b.routeLocks, k.name)
	lock.Lock()
	defer lock.Unlock()

	route, err := getRoute(ctx, s, k.name)
	if err != nil {
		return err
	}
	if route == nil || route.ID != k.id {
		return nil // the tokens' route is gone: so are its totals
	}
	r, err := getRouteUsage(ctx, s, k.name, k.id)
	if err != nil {
		return err
	}
	r.add(d)
	entry, err := logical.StorageEntryJSON(routeUsagePrefix+k.name, r)
	if err != nil {
		return err
	}
	if err := s.Put(ctx, entry); err != nil {
		return fmt.Errorf("writing usage of route %q: %w", k.name, err)
	}
	return nil
}
