package proxy

import (
	"crypto/sha256"
	"math"
	"net/netip"
	"time"

	"golang.org/x/time/rate"
)

// unknownTokenLimit bounds how fast one client can have tokens refused as
// unknown by the engine. Anyone can forge a well-formed token (the checksum
// is public) and each one costs a Vault round trip; a client past its limit
// gets 429 before its next token reaches Vault. A token the engine allowed
// recently is never held back, so agents that share an address (a NAT, a
// load balancer) with one that sends garbage keep working.
type unknownTokenLimit struct {
	every   rate.Limit
	burst   int
	clients *ttlCache[netip.Prefix, *rate.Limiter]
	// allowed holds SHA-256 digests of tokens the engine allowed lately:
	// not the tokens, and not decisions (each request is still resolved).
	allowed *ttlCache[[sha256.Size]byte, struct{}]
}

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
		every:   rate.Limit(perSecond),
		burst:   burst,
		clients: newTTLCache[netip.Prefix, *rate.Limiter](maxLimitedClients, keep),
		allowed: newTTLCache[[sha256.Size]byte, struct{}](maxRecentTokens, recentTokenAge),
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

// retryAfter is how long ip must wait before tok is resolved: zero when it
// may go on.
func (l *unknownTokenLimit) retryAfter(ip, tok string) time.Duration {
	if l == nil {
		return 0
	}
	lim, ok := l.clients.Get(clientKey(ip))
	if ok && lim.Tokens() < 1 && l.allowed.Contains(sha256.Sum256([]byte(tok))) {
		return 0
	}
	if !ok {
		return 0
	}
	tokens := lim.Tokens()
	if tokens >= 1 {
		return 0
	}
	return time.Duration(math.Ceil((1 - tokens) / float64(l.every) * float64(time.Second)))
}

// resolved records that the engine allowed tok.
func (l *unknownTokenLimit) resolved(tok string) {
	if l != nil {
		l.allowed.Add(sha256.Sum256([]byte(tok)), struct{}{})
	}
}

// refused records that the engine did not know a token ip sent.
func (l *unknownTokenLimit) refused(ip string) {
	if l == nil {
		return
	}
	key := clientKey(ip)
	lim, ok := l.clients.Get(key)
	if !ok {
		lim = rate.NewLimiter(l.every, l.burst)
		l.clients.Add(key, lim)
	}
	lim.Allow()
}

// sweep forgets clients and tokens past their time.
func (l *unknownTokenLimit) sweep() {
	if l != nil {
		l.clients.sweep()
		l.allowed.sweep()
	}
}
