package limits

import (
	"hash/maphash"
	"sync"
	"time"
)

// Limiter enforces rate limits with GCRA (the generic cell rate
// algorithm): per key it keeps one time, the theoretical arrival time (TAT)
// of the next request. With emission interval T = Period/N and burst N, a
// request at now conforms when max(TAT, now) + T - now <= N*T; it then
// moves TAT to max(TAT, now) + T. A refused request changes nothing, and
// the time until it would conform is exact.
//
// It lives in memory only. The engine decides every request on Vault's
// active node, so one limiter sees all of them, however many proxies send
// them. A new active node (leader failover, plugin reload) starts with
// empty windows: each key may get one more burst.
type Limiter struct {
	seed   maphash.Seed
	shards [limiterShards]limiterShard
}

const limiterShards = 64

type limiterShard struct {
	mu     sync.Mutex
	tokens map[string]int64 // token key -> TAT, unix nanoseconds
	routes map[string]int64 // route key (one life of a route) -> TAT
}

// NewLimiter returns a Limiter with no windows.
func NewLimiter() *Limiter {
	l := &Limiter{seed: maphash.MakeSeed()}
	for i := range l.shards {
		l.shards[i].tokens = map[string]int64{}
		l.shards[i].routes = map[string]int64{}
	}
	return l
}

// Check is one limit a request must pass: a key and its rate.
type Check struct {
	Route bool // Key names a route, not a token
	Key   string
	Rate  *Rate // nil: no limit, nothing to check
}

func (l *Limiter) shard(key string) int {
	return int(maphash.String(l.seed, key) % limiterShards)
}

// Allow decides a request that must pass both checks, charging both only when both conform; retry is the wait when refused.
func (l *Limiter) Allow(now time.Time, a, b Check) (ok bool, retry time.Duration) {
	// Both or nothing: a request refused by one limit spends nothing of
	// the other. retry is until it would conform to both, if nothing else
	// is charged meanwhile.
	if a.Rate == nil {
		a, b = b, a
	}
	if a.Rate == nil {
		return true, 0
	}
	ns := now.UnixNano()
	ia, ib := l.shard(a.Key), -1
	if b.Rate != nil {
		ib = l.shard(b.Key)
	}
	// Both shards are held while checking and charging, locked in index
	// order so that two requests cannot deadlock.
	lo, hi := min(ia, ib), max(ia, ib)
	if lo >= 0 {
		l.shards[lo].mu.Lock()
		defer l.shards[lo].mu.Unlock()
	}
	if hi != lo {
		l.shards[hi].mu.Lock()
		defer l.shards[hi].mu.Unlock()
	}
	sa := &l.shards[ia]
	var sb *limiterShard
	if ib >= 0 {
		sb = &l.shards[ib]
	}

	tatA, waitA := sa.conform(a, ns)
	var tatB int64
	var waitB time.Duration
	if sb != nil {
		tatB, waitB = sb.conform(b, ns)
	}
	if waitA > 0 || waitB > 0 {
		return false, max(waitA, waitB)
	}
	sa.set(a, tatA)
	if sb != nil {
		sb.set(b, tatB)
	}
	return true, 0
}

// conform returns the key's TAT after a request at ns, and how long the
// request must wait (0 when it conforms).
func (s *limiterShard) conform(c Check, ns int64) (newTAT int64, wait time.Duration) {
	tat := s.table(c)[c.Key]
	tat = max(tat, ns)
	interval := int64(c.Rate.Interval())
	newTAT = tat + interval
	limit := interval * c.Rate.N
	if over := newTAT - ns - limit; over > 0 {
		return 0, time.Duration(over)
	}
	return newTAT, 0
}

func (s *limiterShard) set(c Check, tat int64) { s.table(c)[c.Key] = tat }

func (s *limiterShard) table(c Check) map[string]int64 {
	if c.Route {
		return s.routes
	}
	return s.tokens
}

// Remaining is how many requests c's key could make at now, at once.
func (l *Limiter) Remaining(now time.Time, c Check) int64 {
	s := &l.shards[l.shard(c.Key)]
	s.mu.Lock()
	tat := s.table(c)[c.Key]
	s.mu.Unlock()
	ns := now.UnixNano()
	interval := int64(c.Rate.Interval())
	used := max(tat-ns, 0) // what the window still holds
	return max(interval*c.Rate.N-used, 0) / interval
}

// ForgetToken drops a token key's window.
func (l *Limiter) ForgetToken(key string) {
	s := &l.shards[l.shard(key)]
	s.mu.Lock()
	delete(s.tokens, key)
	s.mu.Unlock()
}

// Sweep drops every window whose TAT has passed and returns how many are kept.
func (l *Limiter) Sweep(now time.Time) (kept int) {
	// Such a key is as fresh as one never seen, so memory holds only keys
	// used within their last period (at most 24h).
	ns := now.UnixNano()
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		for _, m := range []map[string]int64{s.tokens, s.routes} {
			for k, tat := range m {
				if tat <= ns {
					delete(m, k)
				}
			}
			kept += len(m)
		}
		s.mu.Unlock()
	}
	return kept
}
