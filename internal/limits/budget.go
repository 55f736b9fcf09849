package limits

import (
	"math"
	"slices"
	"sync/atomic"
	"time"
)

// ReservationTTL is how long a reservation holds when it is never settled: longer than any one LLM request should take.
const ReservationTTL = time.Hour

// reservation is the output cap an admitted request holds of its token's
// budget, and when it was made.
type reservation struct {
	at     int64 // unix nanoseconds
	amount int64
}

// Reservations are what one token's requests in flight hold of its budget, oldest first; the caller locks.
type Reservations struct {
	// Oldest first: a settle releases the oldest, and expiry drops the
	// oldest. Reservations expire so that a proxy that died before
	// settling cannot hold a token's budget for ever.
	held []reservation
	sum  int64
}

// Len is how many reservations are held, expired ones included until dropped.
func (r *Reservations) Len() int { return len(r.held) }

// Sum is what the held reservations add up to.
func (r *Reservations) Sum() int64 { return r.sum }

// Add holds amount from now.
func (r *Reservations) Add(amount int64, now time.Time) {
	r.held = append(r.held, reservation{at: now.UnixNano(), amount: amount})
	r.sum = SatAdd(r.sum, amount)
}

// Expire drops the reservations made at or before now - ReservationTTL, looking only at the oldest.
func (r *Reservations) Expire(now time.Time) {
	// Cheap on the hot path: only the head is looked at, which is the
	// oldest unless the clock went back; Sweep checks them all.
	cutoff := now.Add(-ReservationTTL).UnixNano()
	n := 0
	for n < len(r.held) && r.held[n].at <= cutoff {
		n++
	}
	r.release(n)
}

// Release releases the n oldest reservations (all there are, if fewer).
func (r *Reservations) Release(n int64) { r.release(int(min(n, int64(len(r.held))))) }

func (r *Reservations) release(n int) {
	n = min(n, len(r.held))
	for _, x := range r.held[:n] {
		r.sum -= x.amount
	}
	r.held = r.held[n:]
	r.reset()
}

// reset frees the array once nothing is held, so sum cannot drift.
func (r *Reservations) reset() {
	if len(r.held) == 0 {
		r.held, r.sum = nil, 0
	}
}

// Sweep drops every expired reservation, wherever it is.
func (r *Reservations) Sweep(now time.Time) {
	cutoff := now.Add(-ReservationTTL).UnixNano()
	r.held = slices.DeleteFunc(r.held, func(x reservation) bool {
		if x.at <= cutoff {
			r.sum -= x.amount
			return true
		}
		return false
	})
	r.reset()
}

// Live is how many reservations are unexpired at now, and their sum.
func (r *Reservations) Live(now time.Time) (count int, sum int64) {
	cutoff := now.Add(-ReservationTTL).UnixNano()
	for _, x := range r.held {
		if x.at > cutoff {
			count++
			sum = SatAdd(sum, x.amount)
		}
	}
	return count, sum
}

// Cancel drops the newest reservation of amount, if there is one.
func (r *Reservations) Cancel(amount int64) {
	for i := len(r.held) - 1; i >= 0; i-- {
		if r.held[i].amount == amount {
			r.sum -= amount
			r.held = slices.Delete(r.held, i, i+1)
			break
		}
	}
	r.reset()
}

// MinPositive is the stricter of two limits where 0 (or less) means none.
func MinPositive(a, b int64) int64 {
	switch {
	case a <= 0:
		return max(b, 0)
	case b <= 0:
		return a
	}
	return min(a, b)
}

// SatAdd is a + b for counts (a, b >= 0), stopping at the largest int64 instead of wrapping to a negative total.
func SatAdd(a, b int64) int64 {
	if b > math.MaxInt64-a {
		return math.MaxInt64
	}
	return a + b
}

// AddSat adds d >= 0 to x, saturating.
func AddSat(x *atomic.Int64, d int64) {
	for {
		old := x.Load()
		if x.CompareAndSwap(old, SatAdd(old, d)) {
			return
		}
	}
}
