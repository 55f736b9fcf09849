// Package limits is the pure logic of what a token may cost: rate-limit
// values and their GCRA limiter, model allow-lists, budget reservations and
// saturating counts. Routes set limits, a mint may only narrow them, and at
// resolve the stricter of the token's and the route's apply. It knows
// nothing of Vault, so the engine and the proxy can test it alone.
package limits

import (
	"fmt"
	"math/bits"
	"strconv"
	"strings"
	"time"
)

// Rate limit bounds: a period from 1 s to 24 h, at most a billion requests.
const (
	minRatePeriod = time.Second
	maxRatePeriod = 24 * time.Hour
	maxRateCount  = 1_000_000_000
)

// Rate is "N requests per Period", enforced as GCRA (Limiter): bursts of up to N, refilled at N per Period.
type Rate struct {
	N      int64         `json:"n"`
	Period time.Duration `json:"period"`
}

// ParseRate parses "N/DURATION" (60/1m, 10/1s, 1000/1h); "" and "0" are no limit (nil).
func ParseRate(s string) (*Rate, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "0" {
		return nil, nil
	}
	count, period, ok := strings.Cut(s, "/")
	if !ok {
		return nil, fmt.Errorf("%q is not N/DURATION (for example 60/1m)", s)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(count), 10, 64)
	if err != nil || n < 1 || n > maxRateCount {
		return nil, fmt.Errorf("%q: N must be a whole number from 1 to %d", s, maxRateCount)
	}
	p, err := parsePeriod(strings.TrimSpace(period))
	if err != nil || p < minRatePeriod || p > maxRatePeriod {
		return nil, fmt.Errorf("%q: the duration must be from 1s to 24h (for example 1m)", s)
	}
	return &Rate{N: n, Period: p}, nil
}

// parsePeriod reads a Go duration (1m, 1h30m) or, as Vault does, a bare
// number of seconds.
func parsePeriod(s string) (time.Duration, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil && n > 0 && n <= int64(maxRatePeriod/time.Second) {
		return time.Duration(n) * time.Second, nil
	}
	return time.ParseDuration(s)
}

// String formats r as ParseRate reads it; nil is "".
func (r *Rate) String() string {
	if r == nil {
		return ""
	}
	return strconv.FormatInt(r.N, 10) + "/" + formatPeriod(r.Period)
}

// formatPeriod writes a period the way an admin would: 1m, not 1m0s.
func formatPeriod(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// Interval is GCRA's emission interval: Period/N, rounded up so the long-run rate never exceeds N per Period.
func (r *Rate) Interval() time.Duration {
	return (r.Period + time.Duration(r.N) - 1) / time.Duration(r.N)
}

// Within reports whether r is at most as permissive as wide (nil: none): no higher a rate and no larger a burst.
func (r *Rate) Within(wide *Rate) bool {
	if wide == nil {
		return true
	}
	if r == nil {
		return false
	}
	// r.N/r.Period <= wide.N/wide.Period, exactly, in 128 bits.
	lh, ll := bits.Mul64(uint64(r.N), uint64(wide.Period))
	rh, rl := bits.Mul64(uint64(wide.N), uint64(r.Period))
	rateOK := lh < rh || lh == rh && ll <= rl
	return rateOK && r.N <= wide.N
}

// StricterRate is one limit at least as strict as both a and b (nil: none).
func StricterRate(a, b *Rate) *Rate {
	// The stricter one when one lies within the other, else the longer
	// emission interval with the smaller burst: any sequence of requests it
	// admits, both admit.
	switch {
	case a == nil:
		return b
	case b == nil || a.Within(b):
		return a
	case b.Within(a):
		return b
	}
	n := min(a.N, b.N)
	return &Rate{N: n, Period: max(a.Interval(), b.Interval()) * time.Duration(n)}
}
