package plugin

import (
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/phantomvault/phantom/internal/resolve"
)

// Budget reservations. Usage reaches the engine only when the proxy reports
// it, after the response (and a report interval) is over: checking a budget
// against reported usage alone lets a token spend, between its requests and
// the reports of them, as much as it can get in flight. So a request
// admitted under a budget reserves its output cap (the most output it can
// spend) until the proxy settles it (UsageReport.Settled); a request is
// admitted only while spent + reserved < budget.
//
// Hence what the token spends never passes budget - 1 + cap, plus the input
// tokens of the requests in flight when the last one was admitted (inputs
// are not reserved: only the output has a bound the engine knows), and at
// most ceil(budget/cap) requests are in flight at once.
//
// Reservations live in the active node's memory only, like rate windows: a
// new active node starts with none, so a failover forgets the reservations
// of the requests in flight at that moment. They expire after
// reservationTTL, so that a proxy that died before settling cannot hold a
// token's budget for ever.

// reservationTTL is how long a reservation holds when it is never settled:
// longer than any one LLM request should take.
const reservationTTL = time.Hour

// budgetPendingRetry is the retry_after_ms of budget_pending: the proxy's
// default report interval, after which the usage in flight is usually in
// (a settled report frees the budget sooner).
const budgetPendingRetry = time.Second

// reservation is the output cap an admitted request holds of its token's
// budget, and when it was made.
type reservation struct {
	at     int64 // unix nanoseconds
	amount int64
}

// reservations are one token's, oldest first: a settle releases the oldest,
// and expiry drops the oldest.
type reservations struct {
	mu   sync.Mutex // also orders reports' usage with the budget check (admitBudget)
	held []reservation
	sum  int64
}

// expireLocked drops the reservations made at or before now - reservationTTL.
// Cheap on the hot path: only the head is looked at, which is the oldest
// unless the clock went back; sweep checks them all.
func (r *reservations) expireLocked(now time.Time) {
	cutoff := now.Add(-reservationTTL).UnixNano()
	n := 0
	for n < len(r.held) && r.held[n].at <= cutoff {
		n++
	}
	r.releaseLocked(n)
}

// releaseLocked releases the n oldest reservations (all there are, if fewer).
func (r *reservations) releaseLocked(n int) {
	n = min(n, len(r.held))
	for _, x := range r.held[:n] {
		r.sum -= x.amount
	}
	r.held = r.held[n:]
	if len(r.held) == 0 {
		r.held, r.sum = nil, 0 // free the array; sum cannot drift
	}
}

// sweepLocked drops every expired reservation, wherever it is.
func (r *reservations) sweepLocked(now time.Time) {
	cutoff := now.Add(-reservationTTL).UnixNano()
	r.held = slices.DeleteFunc(r.held, func(x reservation) bool {
		if x.at <= cutoff {
			r.sum -= x.amount
			return true
		}
		return false
	})
	if len(r.held) == 0 {
		r.held, r.sum = nil, 0
	}
}

// liveLocked is what the reservations not yet expired at now hold: how many
// and their sum.
func (r *reservations) liveLocked(now time.Time) (count int, sum int64) {
	cutoff := now.Add(-reservationTTL).UnixNano()
	for _, x := range r.held {
		if x.at > cutoff {
			count++
			sum = satAdd(sum, x.amount)
		}
	}
	return count, sum
}

// budgetAdmission is a budgeted request being decided (the zero value: no
// budget applies): its token's reservations stay locked from the budget
// check until the request is reserved or refused, so that check and
// reservation are one step however many resolves of the token run at once.
type budgetAdmission struct {
	u         *usage
	remaining int64 // budget - spent - reserved, before this request
}

// admitBudget checks a request of a token under budget against what it
// spent and what its requests in flight reserve. On success the token's
// reservations are left locked: the caller decides the rest of the request
// (its rates) and then calls reserve or release, exactly once.
func (c *usageCounter) admitBudget(tokenHMAC string, t *tokenEntry, budget int64, now time.Time) (budgetAdmission, *resolve.Answer) {
	u := c.entry(tokenHMAC, t)
	u.catchUp(t)
	u.res.mu.Lock()
	u.res.expireLocked(now)
	spent := u.spent()
	if spent >= budget {
		u.res.mu.Unlock()
		return budgetAdmission{}, deny(resolve.ReasonBudgetExhausted, "token has spent its budget of "+strconv.FormatInt(budget, 10)+" LLM tokens", t)
	}
	if satAdd(spent, u.res.sum) >= budget {
		inFlight := len(u.res.held)
		u.res.mu.Unlock()
		a := deny(resolve.ReasonBudgetPending, "the rest of the budget is reserved by "+strconv.Itoa(inFlight)+
			" requests in flight; retry once their usage is reported", t)
		a.RetryAfterMS = retryAfterMS(budgetPendingRetry)
		return budgetAdmission{}, a
	}
	return budgetAdmission{u: u, remaining: budget - spent - u.res.sum}, nil
}

// reserve holds amount (the request's output cap) for the admitted request
// and unlocks. A cap of 0 (a budget stored without a cap, before caps were
// required) reserves nothing: such a token's overshoot has no bound but its
// requests in flight.
func (a *budgetAdmission) reserve(amount int64, now time.Time) {
	if amount > 0 {
		a.u.res.held = append(a.u.res.held, reservation{at: now.UnixNano(), amount: amount})
		a.u.res.sum = satAdd(a.u.res.sum, amount)
	}
	a.u.res.mu.Unlock()
}

// release unlocks without reserving: the request was refused after all.
func (a *budgetAdmission) release() { a.u.res.mu.Unlock() }

// cancelReserved undoes the reservation of a request that was allowed
// under lim but whose answer never leaves the engine (storage failed after
// the budget check), so that no proxy will settle it: the newest
// reservation of that amount, which is the request's or one just like it.
func (c *usageCounter) cancelReserved(tokenHMAC string, lim *resolve.Limits) {
	if lim == nil || lim.BudgetRemaining == nil || lim.MaxOutputTokens <= 0 {
		return
	}
	v, ok := c.m.Load(tokenHMAC)
	if !ok {
		return
	}
	amount := lim.MaxOutputTokens
	r := &v.(*usage).res
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.held) - 1; i >= 0; i-- {
		if r.held[i].amount == amount {
			r.sum -= amount
			r.held = slices.Delete(r.held, i, i+1)
			break
		}
	}
	if len(r.held) == 0 {
		r.held, r.sum = nil, 0
	}
}

// cancelAnswered is cancelReserved for the allowed answers of a batch that
// fails as a whole.
func (c *usageCounter) cancelAnswered(answers []*resolve.Answer) {
	for _, a := range answers {
		if a == nil || a.Allowed == nil || !*a.Allowed || a.Limits == nil {
			continue
		}
		if v, ok := c.byAccessor.Load(a.Accessor); ok {
			c.cancelReserved(v.(string), a.Limits)
		}
	}
}

// apply adds one report to its token's usage and then settles the requests
// it closes, in one critical section with admitBudget: a resolve never sees
// a request's reservation released before its usage counts.
func (c *usageCounter) apply(tokenHMAC string, t *tokenEntry, r *resolve.UsageReport) {
	u := c.entry(tokenHMAC, t)
	u.res.mu.Lock()
	defer u.res.mu.Unlock()
	addSat(&u.input, r.InputTokens)
	addSat(&u.output, r.OutputTokens)
	addSat(&u.estimated, r.Estimated)
	u.res.releaseLocked(int(min(r.Settled, int64(math.MaxInt))))
}

// reserved is what the token's unexpired reservations hold at now.
func (c *usageCounter) reserved(tokenHMAC string, now time.Time) (count int, sum int64) {
	v, ok := c.m.Load(tokenHMAC)
	if !ok {
		return 0, 0
	}
	r := &v.(*usage).res
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.liveLocked(now)
}

// sweepReservations drops every expired reservation; it returns how many
// are still held.
func (c *usageCounter) sweepReservations(now time.Time) (kept int) {
	c.m.Range(func(_, v any) bool {
		r := &v.(*usage).res
		r.mu.Lock()
		r.sweepLocked(now)
		kept += len(r.held)
		r.mu.Unlock()
		return true
	})
	return kept
}

// satAdd is a + b for counts (a, b >= 0), stopping at the largest int64
// instead of wrapping to a negative total.
func satAdd(a, b int64) int64 {
	if b > math.MaxInt64-a {
		return math.MaxInt64
	}
	return a + b
}

// addSat adds d >= 0 to x, saturating.
func addSat(x *atomic.Int64, d int64) {
	for {
		old := x.Load()
		if x.CompareAndSwap(old, satAdd(old, d)) {
			return
		}
	}
}
