package proxy

import (
	"crypto/sha256"
	"math"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/internal/ttlcache"
)

// unknownTokenLimit bounds how fast one client can make the proxy call Vault
// without a credential the engine vouched for: tokens it has not allowed
// lately (charged before the call, one unit a token however many of its
// requests are in flight, and given back if the token is live), and CONNECTs
// on the forward listener without a token or with one the engine has not
// allowed lately. Anyone can forge a well-formed token (the checksum is
// public) or name a host no route leads to, and each one costs a Vault round
// trip; a client past its limit gets 429 before its next one reaches Vault. A
// token the engine allowed recently is never held back, so agents that share
// an address (a NAT, a load balancer) with one that sends garbage keep
// working; one it found dead for good is refused again from memory, with its
// 401, so it costs no call and never looks transient. A token refused for
// the client's address (bound to others) keeps its unit and is no longer
// one allowed lately: a stolen token costs Vault at most one call for each
// of its owner's, then is held to the limit like a forged one.
type unknownTokenLimit struct {
	every   float64 // refill, per second
	burst   float64
	mu      sync.Mutex // creating a client's budget: one per client, even in a burst
	clients *ttlcache.Cache[netip.Prefix, *clientBudget]
	// allowed holds SHA-256 digests of tokens the engine allowed lately:
	// not the tokens, and not decisions (each request is still resolved).
	allowed *ttlcache.Cache[[sha256.Size]byte, struct{}]
	// dead holds the digests of tokens the engine found dead for good
	// (revoked, expired, used up, budget spent): a refusal that no later
	// answer can turn into an allowance, so it is answered again without
	// a call. Never an allowance, never a refusal that may change.
	dead *ttlcache.Cache[[sha256.Size]byte, deadToken]
	// charged counts, by digest, the requests in flight whose token took a
	// unit of their client's budget (charge): one unit a token, however
	// many of its requests are in flight.
	pmu     sync.Mutex
	charged map[[sha256.Size]byte]int
}

// tokenKey is a token's SHA-256 digest, taken once a request: the limit
// keeps digests, never tokens. The zero key stands for no token.
type tokenKey struct {
	sum [sha256.Size]byte
	ok  bool
}

func keyOf(tok string) tokenKey {
	if tok == "" {
		return tokenKey{}
	}
	return tokenKey{sha256.Sum256([]byte(tok)), true}
}

// deadToken is what a refusal for a dead token says again.
type deadToken struct{ reason, route, accessor string }

// permanentlyDead are the reasons no later answer can reverse: a revoked
// or expired lease stays so, uses and budgets are never refilled, and a
// route written again after its deletion has a new id its old tokens do
// not name. (An unknown token may be a fresh one a lagging node has not
// seen yet.)
var permanentlyDead = []string{resolve.ReasonRevoked, resolve.ReasonExpired, resolve.ReasonUsesExhausted,
	resolve.ReasonBudgetExhausted, resolve.ReasonRouteDeleted}

// maxLimitedClients bounds the limiter's memory; an evicted client starts
// over with a full burst, and the engine still pays only a cached miss.
const maxLimitedClients = 1 << 16

// A token allowed within recentTokenAge passes the limit; at most
// maxRecentTokens are remembered.
const (
	maxRecentTokens = 1 << 16
	recentTokenAge  = 10 * time.Minute
)

func newUnknownTokenLimit(perSecond float64, burst int) *unknownTokenLimit {
	if perSecond <= 0 {
		return nil // disabled
	}
	// A client's state is kept until its bucket would be full again.
	keep := time.Duration(float64(burst)/perSecond*float64(time.Second)) + time.Minute
	return &unknownTokenLimit{
		every:   perSecond,
		burst:   float64(burst),
		clients: ttlcache.New[netip.Prefix, *clientBudget](maxLimitedClients, keep),
		allowed: ttlcache.New[[sha256.Size]byte, struct{}](maxRecentTokens, recentTokenAge),
		dead:    ttlcache.New[[sha256.Size]byte, deadToken](maxRecentTokens, recentTokenAge),
		charged: map[[sha256.Size]byte]int{},
	}
}

// clientBudget is one client's token bucket: burst at most, refilled at
// every per second. Unlike rate.Limiter's, a unit taken can be given back.
type clientBudget struct {
	mu     sync.Mutex
	tokens float64
	last   time.Time
}

// refill brings b up to now; b.mu is held.
func (b *clientBudget) refill(now time.Time, every, burst float64) {
	if now.After(b.last) {
		b.tokens = min(burst, b.tokens+now.Sub(b.last).Seconds()*every)
		b.last = now
	}
}

// clientKey groups addresses one client controls: an IPv4 address, or an
// IPv6 /64 (one host's usual allocation).
func clientKey(ip string) netip.Prefix {
	addr, err := netip.ParseAddr(ip)
	if err != nil {
		return netip.Prefix{}
	}
	addr = addr.Unmap()
	bits := 32
	if addr.Is6() {
		bits = 64
	}
	p, _ := addr.Prefix(bits)
	return p
}

// budget is ip's bucket, made full when it has none.
func (l *unknownTokenLimit) budget(ip string) *clientBudget {
	key := clientKey(ip)
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.clients.Get(key)
	if !ok {
		b = &clientBudget{tokens: l.burst, last: time.Now()}
	}
	l.clients.Add(key, b) // kept until its bucket would be full again, from its last charge
	return b
}

// wait is how long until b holds a whole unit again: zero when it does.
func (l *unknownTokenLimit) wait(b *clientBudget) time.Duration {
	if b.tokens >= 1 {
		return 0
	}
	return time.Duration(math.Ceil((1 - b.tokens) / l.every * float64(time.Second)))
}

// recentlyAllowed reports whether the engine allowed the token k lately.
func (l *unknownTokenLimit) recentlyAllowed(k tokenKey) bool {
	return l != nil && k.ok && l.allowed.Contains(k.sum)
}

// take charges ip, before the call, for a call to Vault that no credential
// vouches for (a request or a CONNECT without a token, or with one the
// engine has not allowed lately). It holds the unit while the call is made,
// so a burst of concurrent calls cannot all pass before the first answer.
// It returns a wait above zero when ip has nothing left; otherwise
// giveBack, for when the engine allowed the call after all (a nil limit: a
// no-op).
func (l *unknownTokenLimit) take(ip string) (wait time.Duration, giveBack func()) {
	if l == nil {
		return 0, func() {}
	}
	b := l.budget(ip)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill(time.Now(), l.every, l.burst)
	if wait := l.wait(b); wait > 0 {
		return wait, nil
	}
	b.tokens--
	var once sync.Once
	return 0, func() {
		once.Do(func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			b.refill(time.Now(), l.every, l.burst)
			b.tokens = min(l.burst, b.tokens+1)
		})
	}
}

// resolved records that the engine allowed the token k.
func (l *unknownTokenLimit) resolved(k tokenKey) {
	if l != nil && k.ok {
		l.allowed.Add(k.sum, struct{}{})
	}
}

// forget drops the token k from the tokens allowed lately, once the engine
// refused it as dead or for the client's address: it passes the limit no
// more.
func (l *unknownTokenLimit) forget(k tokenKey) {
	if l != nil && k.ok {
		l.allowed.Remove(k.sum)
	}
}

// sweep forgets clients and tokens past their time.
func (l *unknownTokenLimit) sweep() {
	if l != nil {
		l.clients.Sweep()
		l.allowed.Sweep()
		l.dead.Sweep()
	}
}

// charge takes a unit of ip's budget before the token k is resolved,
// unless the engine allowed k lately or a request with k already took one
// and is still being resolved: a burst of forged tokens sent at
// once is held to the burst, while many requests of one fresh token (an
// agent's parallel connections) cost one unit. Unless wait is above zero,
// settle must be called once, with the answer: it gives the unit back when
// live.
func (l *unknownTokenLimit) charge(ip string, k tokenKey) (wait time.Duration, settle func(live bool)) {
	if l == nil || l.recentlyAllowed(k) {
		return 0, func(bool) {}
	}
	l.pmu.Lock()
	if l.charged[k.sum] > 0 {
		l.charged[k.sum]++
		l.pmu.Unlock()
		return 0, func(bool) { l.uncharge(k) }
	}
	l.pmu.Unlock()
	wait, giveBack := l.take(ip)
	if wait > 0 {
		return wait, nil
	}
	l.pmu.Lock()
	l.charged[k.sum]++
	l.pmu.Unlock()
	return 0, func(live bool) {
		if live {
			giveBack()
		}
		l.uncharge(k)
	}
}

func (l *unknownTokenLimit) uncharge(k tokenKey) {
	l.pmu.Lock()
	defer l.pmu.Unlock()
	if l.charged[k.sum]--; l.charged[k.sum] <= 0 {
		delete(l.charged, k.sum)
	}
}

// unusable reports whether the engine's refusal says the token vouches
// for nothing from this client: unknown or dead (401), or not for its
// address. Its unit of the limit is kept, and it passes the limit no more.
func unusable(ref *refusal) bool {
	return ref.status == http.StatusUnauthorized || ref.reason == resolve.ReasonCIDRDenied
}

// died records the engine's refusal of the token k as dead or for the
// client's address: it passes the limit no more and, when no later answer
// can reverse the refusal (permanentlyDead), deadAgain returns it.
func (l *unknownTokenLimit) died(k tokenKey, reason, route, accessor string) {
	if l == nil || !k.ok {
		return
	}
	l.forget(k)
	if slices.Contains(permanentlyDead, reason) {
		l.dead.Add(k.sum, deadToken{reason, route, accessor})
	}
}

func (l *unknownTokenLimit) deadAgain(k tokenKey) (deadToken, bool) {
	if l == nil || !k.ok {
		return deadToken{}, false
	}
	return l.dead.Get(k.sum)
}
