package plugin

import (
	"strconv"
	"sync"
	"time"

	"github.com/phantomvault/phantom/internal/limits"
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
// limits.ReservationTTL, so that a proxy that died before settling cannot
// hold a token's budget for ever.

// budgetPendingRetry is the retry_after_ms of budget_pending: the proxy's
// default report interval, after which the usage in flight is usually in
// (a settled report frees the budget sooner).
const budgetPendingRetry = time.Second

// reservations are one token's, under the lock that also orders reports'
// usage with the budget check (admitBudget).
type reservations struct {
	mu sync.Mutex
	limits.Reservations
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
	u.res.Expire(now)
	spent := u.spent()
	if spent >= budget {
		u.res.mu.Unlock()
		return budgetAdmission{}, deny(resolve.ReasonBudgetExhausted, "token has spent its budget of "+strconv.FormatInt(budget, 10)+" LLM tokens", t)
	}
	if limits.SatAdd(spent, u.res.Sum()) >= budget {
		inFlight := u.res.Len()
		u.res.mu.Unlock()
		a := deny(resolve.ReasonBudgetPending, "the rest of the budget is reserved by "+strconv.Itoa(inFlight)+
			" requests in flight; retry once their usage is reported", t)
		a.RetryAfterMS = retryAfterMS(budgetPendingRetry)
		return budgetAdmission{}, a
	}
	return budgetAdmission{u: u, remaining: budget - spent - u.res.Sum()}, nil
}

// reserve holds amount (the request's output cap) for the admitted request
// and unlocks. A cap of 0 (a budget stored without a cap, before caps were
// required) reserves nothing: such a token's overshoot has no bound but its
// requests in flight.
func (a *budgetAdmission) reserve(amount int64, now time.Time) {
	if amount > 0 {
		a.u.res.Add(amount, now)
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
	r := &v.(*usage).res
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Cancel(lim.MaxOutputTokens)
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
	limits.AddSat(&u.input, r.InputTokens)
	limits.AddSat(&u.output, r.OutputTokens)
	limits.AddSat(&u.estimated, r.Estimated)
	u.res.Release(r.Settled)
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
	return r.Live(now)
}

// sweepReservations drops every expired reservation; it returns how many
// are still held.
func (c *usageCounter) sweepReservations(now time.Time) (kept int) {
	c.m.Range(func(_, v any) bool {
		r := &v.(*usage).res
		r.mu.Lock()
		r.Sweep(now)
		kept += r.Len()
		r.mu.Unlock()
		return true
	})
	return kept
}
