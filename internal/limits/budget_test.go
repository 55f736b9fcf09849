package limits

import (
	"math"
	"sync/atomic"
	"testing"
	"time"

	"github.com/phantomvault/phantom/internal/resolve"
)

func TestSaturatingAdd(t *testing.T) {
	if SatAdd(math.MaxInt64-1, 5) != math.MaxInt64 || SatAdd(2, 3) != 5 || SatAdd(math.MaxInt64, 0) != math.MaxInt64 {
		t.Fatal("SatAdd")
	}
	var x atomic.Int64
	x.Store(math.MaxInt64 - 10)
	AddSat(&x, resolve.MaxReportedTokens)
	if x.Load() != math.MaxInt64 {
		t.Fatalf("AddSat wrapped: %d", x.Load())
	}
}

func TestMinPositive(t *testing.T) {
	for _, c := range [][3]int64{{0, 0, 0}, {0, 5, 5}, {5, 0, 5}, {3, 5, 3}, {-1, -2, 0}, {7, -1, 7}} {
		if got := MinPositive(c[0], c[1]); got != c[2] {
			t.Errorf("MinPositive(%d, %d) = %d, want %d", c[0], c[1], got, c[2])
		}
	}
}

// TestReservations: settles release the oldest, expiry drops what is
// ReservationTTL old (Expire from the head, Sweep anywhere), and Cancel
// drops the newest of an amount.
func TestReservations(t *testing.T) {
	start := time.Unix(1000, 0)
	var r Reservations
	r.Add(10, start)
	r.Add(20, start.Add(time.Minute))
	r.Add(30, start.Add(2*time.Minute))
	if r.Len() != 3 || r.Sum() != 60 {
		t.Fatalf("held %d summing %d, want 3 and 60", r.Len(), r.Sum())
	}
	if n, sum := r.Live(start.Add(ReservationTTL)); n != 2 || sum != 50 {
		t.Fatalf("Live at the first one's expiry: %d summing %d, want 2 and 50", n, sum)
	}
	r.Expire(start.Add(ReservationTTL + time.Minute))
	if r.Len() != 1 || r.Sum() != 30 {
		t.Fatalf("after Expire: %d summing %d, want 1 and 30", r.Len(), r.Sum())
	}
	r.Release(9) // more than is held
	if r.Len() != 0 || r.Sum() != 0 {
		t.Fatalf("after Release: %d summing %d", r.Len(), r.Sum())
	}

	// The clock went back: Expire stops at an unexpired head, Sweep does not.
	r.Add(5, start.Add(time.Hour))
	r.Add(7, start)
	r.Expire(start.Add(ReservationTTL))
	if r.Len() != 2 {
		t.Fatalf("Expire looked past the head: %d held", r.Len())
	}
	r.Sweep(start.Add(ReservationTTL))
	if r.Len() != 1 || r.Sum() != 5 {
		t.Fatalf("after Sweep: %d summing %d, want 1 and 5", r.Len(), r.Sum())
	}

	r.Add(9, start.Add(time.Hour))
	r.Add(5, start.Add(2*time.Hour))
	r.Cancel(5)
	if n, sum := r.Live(start.Add(time.Hour)); n != 2 || sum != 14 || r.Sum() != 14 {
		t.Fatalf("after Cancel: %d summing %d (%d), want the oldest 5 and the 9", n, sum, r.Sum())
	}
	r.Cancel(4) // none of that amount
	if r.Len() != 2 {
		t.Fatalf("Cancel of an amount not held dropped one: %d held", r.Len())
	}
}
