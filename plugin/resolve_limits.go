package plugin

import (
	"strconv"
	"time"

	"github.com/phantomvault/phantom/internal/limits"
	"github.com/phantomvault/phantom/internal/resolve"
)

// checkLimits decides the limits of a request that passed every other
// check, in this order: the model allow-list can match something, the
// budget is neither spent nor all reserved by requests in flight, and last
// the rate limits, so that a request refused for any other reason spends no
// rate; only an allowed request reserves its output cap of the budget
// (budget.go). It returns the limits the proxy enforces on the request, or
// the denial.
func (b *backend) checkLimits(h heldToken, route *routeEntry, now time.Time) (*resolve.Limits, *resolve.Answer) {
	t := h.entry
	e := effective(t, route)
	if e.usageFormat == resolve.UsageNone && (e.budget > 0 || e.maxOutputTokens > 0 || len(e.models) > 0) {
		// The token's own LLM limits outlived its route's usage_format:
		// the proxy could not enforce them, so nothing passes.
		reason := resolve.ReasonModelNotAllowed
		if e.budget > 0 {
			reason = resolve.ReasonBudgetExhausted
		}
		return nil, deny(reason, "the route declares no usage_format any more, so the token's LLM limits cannot be enforced", t)
	}
	if e.noModel {
		return nil, deny(resolve.ReasonModelNotAllowed, "no model is allowed by both the token's and the route's allowed_models", t)
	}
	var budget budgetAdmission // the token's reservations, locked until reserve or release
	if e.budget > 0 {
		var denied *resolve.Answer
		if budget, denied = b.usage.admitBudget(h.tokenHMAC, t, e.budget, now); denied != nil {
			return nil, denied
		}
	}
	if e.rate != nil || e.routeRate != nil {
		ok, wait := b.limiter.Allow(now,
			limits.Check{Key: h.tokenHMAC, Rate: e.rate},
			limits.Check{Route: true, Key: route.ID, Rate: e.routeRate})
		if !ok {
			if budget.u != nil {
				budget.release()
			}
			a := deny(resolve.ReasonRateLimited, "rate limit reached; retry after "+strconv.FormatInt(retryAfterMS(wait), 10)+" ms", t)
			a.RetryAfterMS = retryAfterMS(wait)
			return nil, a
		}
	}
	lim := e.answer()
	if budget.u != nil {
		budget.reserve(e.maxOutputTokens, now)
		lim.BudgetRemaining = new(budget.remaining)
	}
	return lim, nil
}

// retryAfterMS is a wait as the answer's retry_after_ms: rounded up, at
// least 1.
func retryAfterMS(d time.Duration) int64 {
	return max(int64((d+time.Millisecond-1)/time.Millisecond), 1)
}
