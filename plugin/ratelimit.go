package plugin

import (
	"hash/maphash"
	"sync"
	"time"
)

// rateLimiter enforces rate limits with GCRA (the generic cell rate
// algorithm): per key it keeps one time, the theoretical arrival time (TAT)
// of the next request. With emission interval T = Period/N and burst N, a
// request at now conforms when max(TAT, now) + T - now <= N*T; it then
// moves TAT to max(TAT, now) + T. A refused request changes nothing, and
// the time until it would conform is exact.
//
// It lives in memory only: resolve writes no storage for it. The engine
// decides every request on Vault's active node, so one limiter sees all of
// them, however many proxies send them. A new active node (leader failover,
// plugin reload) starts with empty windows: each key may get one more burst.
type rateLimiter struct {
	seed   maphash.Seed
	shards [limiterShards]limiterShard
}

const limiterShards = 64

type limiterShard struct {
	mu     sync.Mutex
	tokens map[string]int64 // token HMAC -> TAT, unix nanoseconds
	routes map[string]int64 // route ID (one life of a route) -> TAT
}

func newRateLimiter() *rateLimiter {
	l := &rateLimiter{seed: maphash.MakeSeed()}
	for i := range l.shards {
		l.shards[i].tokens = map[string]int64{}
		l.shards[i].routes = map[string]int64{}
	}
	return l
}

// limitCheck is one limit a request must pass: a key and its rate.
type limitCheck struct {
	route bool // key names a route, not a token
	key   string
	rate  *rateLimit // nil: no limit, nothing to check
}

func (l *rateLimiter) shard(key string) int {
	return int(maphash.String(l.seed, key) % limiterShards)
}

// allow decides a request that must pass both checks: it is allowed only if
// both conform, and only then are both charged, so a request refused by one
// limit spends nothing of the other. When refused, retry is how long until
// it would conform (to both, if nothing else is charged meanwhile).
func (l *rateLimiter) allow(now time.Time, a, b limitCheck) (ok bool, retry time.Duration) {
	if a.rate == nil {
		a, b = b, a
	}
	if a.rate == nil {
		return true, 0
	}
	ns := now.UnixNano()
	ia, ib := l.shard(a.key), -1
	if b.rate != nil {
		ib = l.shard(b.key)
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
func (s *limiterShard) conform(c limitCheck, ns int64) (newTAT int64, wait time.Duration) {
	tat := s.table(c)[c.key]
	tat = max(tat, ns)
	interval := int64(c.rate.interval())
	newTAT = tat + interval
	limit := interval * c.rate.N
	if over := newTAT - ns - limit; over > 0 {
		return 0, time.Duration(over)
	}
	return newTAT, 0
}

func (s *limiterShard) set(c limitCheck, tat int64) { s.table(c)[c.key] = tat }

func (s *limiterShard) table(c limitCheck) map[string]int64 {
	if c.route {
		return s.routes
	}
	return s.tokens
}

// remaining is how many requests c's key could make at now, at once.
func (l *rateLimiter) remaining(now time.Time, c limitCheck) int64 {
	s := &l.shards[l.shard(c.key)]
	s.mu.Lock()
	tat := s.table(c)[c.key]
	s.mu.Unlock()
	ns := now.UnixNano()
	interval := int64(c.rate.interval())
	used := max(tat-ns, 0) // what the window still holds
	return max(interval*c.rate.N-used, 0) / interval
}

// forgetToken drops a token's window (revoked or tidied tokens).
func (l *rateLimiter) forgetToken(tokenHMAC string) {
	s := &l.shards[l.shard(tokenHMAC)]
	s.mu.Lock()
	delete(s.tokens, tokenHMAC)
	s.mu.Unlock()
}

// sweep drops every window whose TAT has passed: such a key is as fresh as
// one never seen. Memory therefore holds only keys used within their last
// period (at most 24h).
func (l *rateLimiter) sweep(now time.Time) (kept int) {
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

// retryAfterMS is a wait as the answer's retry_after_ms: rounded up, at
// least 1.
func retryAfterMS(d time.Duration) int64 {
	return max(int64((d+time.Millisecond-1)/time.Millisecond), 1)
}
