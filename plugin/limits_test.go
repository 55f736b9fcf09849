package plugin

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/phantomvault/phantom/internal/resolve"
)

func TestParseRateLimit(t *testing.T) {
	for in, want := range map[string]*rateLimit{
		"":        nil,
		"0":       nil,
		"60/1m":   {60, time.Minute},
		"10/1s":   {10, time.Second},
		"1000/1h": {1000, time.Hour},
		"5/30":    {5, 30 * time.Second},
		" 2/24h ": {2, 24 * time.Hour},
	} {
		got, err := parseRateLimit(in)
		if err != nil || (got == nil) != (want == nil) || got != nil && *got != *want {
			t.Errorf("parseRateLimit(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"60", "0/1m", "-1/1m", "60/0s", "60/500ms", "60/25h", "x/1m", "60/x", "1.5/1m", "2000000000/1h"} {
		if r, err := parseRateLimit(bad); err == nil {
			t.Errorf("parseRateLimit(%q) = %v, want an error", bad, r)
		}
	}
	if s := (&rateLimit{60, time.Minute}).String(); s != "60/1m" {
		t.Errorf("String = %q", s)
	}
	for in, want := range map[string]string{"3/90m": "3/1h30m", "10/10s": "10/10s", "5/20m": "5/20m", "1/2h": "1/2h", "2/1.5s": "2/1.5s", "4/3600": "4/1h"} {
		if r, err := parseRateLimit(in); err != nil || r.String() != want {
			t.Errorf("%s reads back as %q (%v), want %q", in, r, err, want)
		}
	}
}

func TestRateWithin(t *testing.T) {
	route := &rateLimit{60, time.Minute}
	for _, c := range []struct {
		mint string
		want bool
	}{
		{"60/1m", true},
		{"30/1m", true},
		{"1/1s", true},    // same rate, smaller burst
		{"2/1s", false},   // higher rate
		{"61/1m", false},  // higher rate and burst
		{"120/2m", false}, // same rate, larger burst
		{"60/2m", true},
		{"50/1h", true},
		{"100/1h", false}, // lower rate, larger burst
	} {
		r, err := parseRateLimit(c.mint)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.within(route); got != c.want {
			t.Errorf("%s within 60/1m = %v, want %v", c.mint, got, c.want)
		}
	}
	if !(&rateLimit{1, time.Second}).within(nil) || (*rateLimit)(nil).within(route) {
		t.Error("within a route without a limit / no limit within a limit")
	}
}

// TestStricterRateAdmitsOnlyWhatBothAdmit: the combined limit is as strict
// as each of its parts, checked on a simulated stream of requests.
func TestStricterRateAdmitsOnlyWhatBothAdmit(t *testing.T) {
	a, b := &rateLimit{10, time.Second}, &rateLimit{100, time.Minute}
	c := stricterRate(a, b)
	start := time.Unix(1000, 0)
	la, lb, lc := newRateLimiter(), newRateLimiter(), newRateLimiter()
	for i := range 2000 {
		now := start.Add(time.Duration(i) * 37 * time.Millisecond)
		if ok, _ := lc.allow(now, limitCheck{key: "k", rate: c}, limitCheck{}); ok {
			okA, _ := la.allow(now, limitCheck{key: "k", rate: a}, limitCheck{})
			okB, _ := lb.allow(now, limitCheck{key: "k", rate: b}, limitCheck{})
			if !okA || !okB {
				t.Fatalf("request %d admitted by the combination (%v) but not by %v (%v) or %v (%v)", i, c, a, okA, b, okB)
			}
		}
	}
	if stricterRate(a, nil) != a || stricterRate(nil, b) != b || stricterRate(a, &rateLimit{20, time.Second}) != a {
		t.Error("stricterRate should return the stricter limit when one lies within the other")
	}
}

func TestGCRA(t *testing.T) {
	l := newRateLimiter()
	now := time.Unix(1000, 0)
	tok := limitCheck{key: "t", rate: &rateLimit{3, time.Minute}}
	for i := range 3 {
		if ok, _ := l.allow(now, tok, limitCheck{}); !ok {
			t.Fatalf("request %d of a burst of 3 refused", i+1)
		}
	}
	ok, retry := l.allow(now, tok, limitCheck{})
	if ok || retry != 20*time.Second {
		t.Fatalf("4th request: ok=%v retry=%v, want refused for 20s", ok, retry)
	}
	if ok, retry := l.allow(now.Add(20*time.Second-time.Millisecond), tok, limitCheck{}); ok || retry != time.Millisecond {
		t.Fatalf("1ms early: ok=%v retry=%v", ok, retry)
	}
	if ok, _ := l.allow(now.Add(20*time.Second), tok, limitCheck{}); !ok {
		t.Fatal("refused at the time Retry-After named")
	}
	if kept := l.sweep(now.Add(time.Hour)); kept != 0 {
		t.Fatalf("sweep kept %d windows that have passed", kept)
	}
	if retryAfterMS(time.Nanosecond) != 1 || retryAfterMS(1500*time.Microsecond) != 2 || retryAfterMS(time.Second) != 1000 {
		t.Error("retryAfterMS must round up to whole milliseconds, at least 1")
	}
}

// TestGCRABothOrNothing: a request refused by one of its two limits spends
// nothing of the other.
func TestGCRABothOrNothing(t *testing.T) {
	l := newRateLimiter()
	now := time.Unix(1000, 0)
	route := limitCheck{route: true, key: "r/1", rate: &rateLimit{2, time.Minute}}
	tokA := limitCheck{key: "a", rate: &rateLimit{5, time.Minute}}
	tokB := limitCheck{key: "b", rate: &rateLimit{5, time.Minute}}
	for _, tok := range []limitCheck{tokA, tokA} {
		if ok, _ := l.allow(now, tok, route); !ok {
			t.Fatal("refused within both limits")
		}
	}
	// The route is spent: b is refused and keeps all 5 of its own.
	if ok, _ := l.allow(now, tokB, route); ok {
		t.Fatal("allowed past the route's limit")
	}
	for i := range 5 {
		if ok, _ := l.allow(now, tokB, limitCheck{}); !ok {
			t.Fatalf("b lost request %d of its own limit to a refusal by the route's", i+1)
		}
	}
}

func TestGCRAExactUnderConcurrency(t *testing.T) {
	l := newRateLimiter()
	now := time.Unix(1000, 0)
	route := limitCheck{route: true, key: "r/1", rate: &rateLimit{50, time.Hour}}
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok := limitCheck{key: string(rune('a' + g)), rate: &rateLimit{10, time.Hour}}
			for range 20 {
				if ok, _ := l.allow(now, tok, route); ok {
					allowed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if allowed.Load() != 50 {
		t.Fatalf("allowed %d, want exactly the route's 50", allowed.Load())
	}
}

func TestModelWithin(t *testing.T) {
	for _, c := range []struct {
		narrow, wide string
		want         bool
	}{
		{"gpt-4o-mini", "gpt-4o*", true},
		{"gpt-4o*", "gpt-4o*", true},
		{"gpt-4o-*", "gpt-4o*", true},
		{"gpt-4*", "gpt-4o*", false},
		{"*", "gpt-*", false},
		{"claude-3-5-haiku-*", "claude-*", true},
		{"claude-*-haiku", "claude-*", true},
		{"a*", "*b", false},
	} {
		if got := modelWithin(c.narrow, c.wide); got != c.want {
			t.Errorf("modelWithin(%q, %q) = %v, want %v", c.narrow, c.wide, got, c.want)
		}
	}
	if m, none := effectiveModels([]string{"gpt-4o*"}, []string{"gpt-4o-mini"}); none || len(m) != 1 || m[0] != "gpt-4o-mini" {
		t.Errorf("route narrowed after mint: %v %v", m, none)
	}
	if m, none := effectiveModels([]string{"a*"}, []string{"*b"}); !none {
		t.Errorf("disjoint lists: %v %v, want none", m, none)
	}
	if m, _ := effectiveModels(nil, []string{"x"}); len(m) != 1 {
		t.Errorf("route only: %v", m)
	}
}

func llmRoute(extra map[string]any) map[string]any {
	d := map[string]any{"usage_format": "openai"}
	for k, v := range extra {
		d[k] = v
	}
	return d
}

func TestRouteLimitFields(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "r", llmRoute(map[string]any{
		"rate_limit": "60/1m", "route_rate_limit": "1000/1h", "token_budget": 5000,
		"max_output_tokens": 512, "allowed_models": "gpt-4o*, gpt-4.1-mini",
	}))
	d := e.ok(t, logical.ReadOperation, "routes/r", nil).Data
	for k, want := range map[string]any{
		"rate_limit": "60/1m", "route_rate_limit": "1000/1h", "token_budget": int64(5000),
		"max_output_tokens": int64(512), "usage_format": "openai",
	} {
		if d[k] != want {
			t.Errorf("%s = %#v, want %#v", k, d[k], want)
		}
	}
	if m := d["allowed_models"].([]string); len(m) != 2 || m[1] != "gpt-4.1-mini" {
		t.Errorf("allowed_models = %v", m)
	}
	// A budget, cap or model list nobody can measure is refused.
	for _, field := range []string{"token_budget", "max_output_tokens", "allowed_models"} {
		val := any(100)
		if field == "allowed_models" {
			val = "gpt-4o"
		}
		e.userError(t, logical.UpdateOperation, "routes/plain", map[string]any{
			"upstream": "https://api.example.com", "allowed_paths": "/x", "allowed_methods": "GET", "credential": testCredential,
			field: val,
		}, "needs usage_format")
	}
	e.userError(t, logical.UpdateOperation, "routes/r", map[string]any{"usage_format": ""}, "needs usage_format")
	e.userError(t, logical.UpdateOperation, "routes/r", map[string]any{"usage_format": "cohere"}, "usage_format")
	e.userError(t, logical.UpdateOperation, "routes/r", map[string]any{"rate_limit": "60/1ms"}, "rate_limit")
	e.userError(t, logical.UpdateOperation, "routes/r", map[string]any{"allowed_models": "gpt 4"}, "allowed_models")
	e.userError(t, logical.UpdateOperation, "routes/r", map[string]any{"token_budget": -1}, "negative")
	// Limits change without the credential, and can be removed.
	e.ok(t, logical.UpdateOperation, "routes/r", map[string]any{"rate_limit": "0", "route_rate_limit": ""})
	d = e.ok(t, logical.ReadOperation, "routes/r", nil).Data
	if d["rate_limit"] != "" || d["route_rate_limit"] != "" {
		t.Errorf("limits not removed: %v %v", d["rate_limit"], d["route_rate_limit"])
	}
	if u, ok := d["usage"].(map[string]any); !ok || u["requests"] != uint64(0) {
		t.Errorf("usage = %#v", d["usage"])
	}
}

func TestMintNarrowsLimits(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "r", llmRoute(map[string]any{
		"rate_limit": "60/1m", "token_budget": 5000, "max_output_tokens": 512, "allowed_models": "gpt-4o*",
	}))
	for _, c := range []struct {
		field string
		value any
		want  string
	}{
		{"rate_limit", "120/1m", "wider than the route allows (60/1m)"},
		{"rate_limit", "2/1s", "wider"},
		{"rate_limit", "120/2m", "wider"}, // same rate, larger burst
		{"rate_limit", "", "given but is empty"},
		{"token_budget", 5001, "wider than the route allows (5000)"},
		{"token_budget", 0, "given but is empty"},
		{"max_output_tokens", 1024, "wider than the route allows (512)"},
		{"allowed_models", "gpt-4*", "wider than the route allows (gpt-4o*)"},
		{"allowed_models", "*", "wider"},
		{"allowed_models", ",", "given but is empty"},
	} {
		e.userError(t, logical.UpdateOperation, "token/r", map[string]any{c.field: c.value}, c.want)
	}
	_, resp := e.mint(t, "r", map[string]any{"rate_limit": "10/1m", "token_budget": 100, "max_output_tokens": 64, "allowed_models": "gpt-4o-mini"})
	for k, want := range map[string]any{"rate_limit": "10/1m", "token_budget": int64(100), "max_output_tokens": int64(64)} {
		if resp.Data[k] != want {
			t.Errorf("mint %s = %#v, want %#v", k, resp.Data[k], want)
		}
	}
	// The route's budget is the default.
	_, resp = e.mint(t, "r", nil)
	if resp.Data["token_budget"] != int64(5000) || resp.Data["rate_limit"] != "60/1m" {
		t.Errorf("defaults: %v", resp.Data)
	}
	// A route without a usage format takes no budget at mint either.
	e.writeRoute(t, "plain", map[string]any{"rate_limit": "5/1s"})
	e.userError(t, logical.UpdateOperation, "token/plain", map[string]any{"token_budget": 10}, "no usage_format")
	e.mint(t, "plain", map[string]any{"rate_limit": "1/1s"})
}

func TestResolveRateLimited(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "r", map[string]any{"rate_limit": "3/1m", "num_uses": 10})
	tok, mint := e.mint(t, "r", nil)
	accessor := mint.Data["accessor"].(string)
	remaining := func() any {
		return e.ok(t, logical.ReadOperation, "tokens/"+accessor, nil).Data["rate_limit_remaining"]
	}
	if got := remaining(); got != int64(3) {
		t.Fatalf("rate_limit_remaining = %v before any request, want 3", got)
	}
	for range 3 {
		wantAllowed(t, e.resolve(t, tok, "GET", "/v1/customers", ""))
	}
	if got := remaining(); got != int64(0) {
		t.Fatalf("rate_limit_remaining = %v after 3, want 0", got)
	}
	d := e.resolve(t, tok, "GET", "/v1/customers", "")
	wantDenied(t, d, resolve.ReasonRateLimited)
	if d["retry_after_ms"] != int64(20000) {
		t.Fatalf("retry_after_ms = %#v, want 20000", d["retry_after_ms"])
	}
	// A request refused for its scope spends no rate, and a 429 no use.
	e.clock.Advance(20 * time.Second)
	wantDenied(t, e.resolve(t, tok, "DELETE", "/v1/customers", ""), resolve.ReasonMethodNotAllowed)
	d = e.resolve(t, tok, "GET", "/v1/customers", "")
	wantAllowed(t, d)
	if d["uses_remaining"] != 6 {
		t.Fatalf("uses_remaining = %v, want 6: a refusal burnt a use", d["uses_remaining"])
	}
	// Lowering the route's limit bites at once on live tokens; a token
	// revoked forgets its window.
	e.clock.Advance(time.Hour)
	e.writeRoute(t, "r", map[string]any{"rate_limit": "1/1m"})
	wantAllowed(t, e.resolve(t, tok, "GET", "/v1/customers", ""))
	wantDenied(t, e.resolve(t, tok, "GET", "/v1/customers", ""), resolve.ReasonRateLimited)
	// Other tokens have windows of their own.
	tok2, _ := e.mint(t, "r", nil)
	wantAllowed(t, e.resolve(t, tok2, "GET", "/v1/customers", ""))
}

func TestResolveRouteRateLimit(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "r", map[string]any{"route_rate_limit": "4/1h", "rate_limit": "3/1h"})
	a, _ := e.mint(t, "r", nil)
	b, _ := e.mint(t, "r", map[string]any{"rate_limit": "2/1h"})
	for range 3 {
		wantAllowed(t, e.resolve(t, a, "GET", "/v1/customers", ""))
	}
	wantDenied(t, e.resolve(t, a, "GET", "/v1/customers", ""), resolve.ReasonRateLimited)
	wantAllowed(t, e.resolve(t, b, "GET", "/v1/customers", ""))
	d := e.resolve(t, b, "GET", "/v1/customers", "")
	wantDenied(t, d, resolve.ReasonRateLimited) // the route's 4 are spent
	if d["retry_after_ms"] != int64(15*60*1000) {
		t.Fatalf("retry_after_ms = %v, want the route's 15 min", d["retry_after_ms"])
	}
	if got := e.ok(t, logical.ReadOperation, "routes/r", nil).Data["route_rate_limit_remaining"]; got != int64(0) {
		t.Fatalf("route_rate_limit_remaining = %v, want 0", got)
	}
	e.clock.Advance(15 * time.Minute)
	if got := e.ok(t, logical.ReadOperation, "routes/r", nil).Data["route_rate_limit_remaining"]; got != int64(1) {
		t.Fatalf("route_rate_limit_remaining = %v 15 min later, want 1", got)
	}
	// Recreating the route starts its window afresh.
	e.ok(t, logical.DeleteOperation, "routes/r", nil)
	e.writeRoute(t, "r", map[string]any{"route_rate_limit": "4/1h"})
	c, _ := e.mint(t, "r", nil)
	wantAllowed(t, e.resolve(t, c, "GET", "/v1/customers", ""))
}

// TestResolveWithoutLimitsIsUnchanged: no limits, no Limits in the answer,
// no window kept.
func TestResolveWithoutLimitsIsUnchanged(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "r", nil)
	tok, _ := e.mint(t, "r", nil)
	d := e.resolve(t, tok, "GET", "/v1/customers", "")
	wantAllowed(t, d)
	if _, ok := d["limits"]; ok {
		t.Fatalf("limits in an answer without any: %v", d["limits"])
	}
	if kept := e.b.limiter.sweep(time.Unix(0, 0)); kept != 0 {
		t.Fatalf("%d rate windows kept for a route without a rate limit", kept)
	}
}

func report(t testing.TB, e *testEnv, reports ...map[string]any) map[string]any {
	t.Helper()
	items := make([]any, len(reports))
	for i, r := range reports {
		items[i] = r
	}
	return e.ok(t, logical.PatchOperation, "usage", map[string]any{"reports": items}).Data
}

func TestBudget(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "r", llmRoute(map[string]any{"token_budget": 1000, "max_output_tokens": 256, "allowed_models": "gpt-4o*"}))
	tok, mint := e.mint(t, "r", map[string]any{"allowed_models": "gpt-4o-mini"})
	accessor := mint.Data["accessor"].(string)

	d := e.resolve(t, tok, "POST", "/v1/customers", "")
	wantAllowed(t, d)
	lim := d["limits"].(map[string]any)
	if lim["usage_format"] != "openai" || lim["budget_remaining"] != int64(1000) || lim["max_output_tokens"] != int64(256) {
		t.Fatalf("limits = %v", lim)
	}
	if m := lim["allowed_models"].([]string); len(m) != 1 || m[0] != "gpt-4o-mini" {
		t.Fatalf("allowed_models = %v", m)
	}

	got := report(t, e, map[string]any{"accessor": accessor, "input_tokens": 300, "output_tokens": 200, "settled": 1},
		map[string]any{"accessor": "pha_unknown", "input_tokens": 1})
	if got["applied"] != 1 || got["unknown_accessors"] != 1 || got["rejected"] != 0 {
		t.Fatalf("usage answer = %v", got)
	}
	d = e.resolve(t, tok, "POST", "/v1/customers", "")
	if d["limits"].(map[string]any)["budget_remaining"] != int64(500) {
		t.Fatalf("budget_remaining = %v after 500 spent and settled", d["limits"])
	}
	rd := e.ok(t, logical.ReadOperation, "tokens/"+accessor, nil).Data
	if rd["rate_limit_remaining"] != nil {
		t.Errorf("rate_limit_remaining = %v without a rate limit", rd["rate_limit_remaining"])
	}
	// The second request, in flight, holds its cap of 256.
	if rd["input_tokens"] != int64(300) || rd["output_tokens"] != int64(200) || rd["budget_remaining"] != int64(244) ||
		rd["budget_reserved"] != int64(256) || rd["budget_in_flight"] != 1 || rd["requests"] != uint64(2) {
		t.Fatalf("token read: %v", rd)
	}
	// Spent: the token is dead, and says so.
	report(t, e, map[string]any{"accessor": accessor, "output_tokens": 500, "estimated": 1, "settled": 1})
	wantDenied(t, e.resolve(t, tok, "POST", "/v1/customers", ""), resolve.ReasonBudgetExhausted)
	rd = e.ok(t, logical.ReadOperation, "tokens/"+accessor, nil).Data
	if rd["status"] != resolve.ReasonBudgetExhausted || rd["budget_remaining"] != int64(0) || rd["estimated_responses"] != int64(1) ||
		rd["budget_reserved"] != int64(0) || rd["budget_in_flight"] != 0 {
		t.Fatalf("token read after the budget: %v", rd)
	}
	// The usage of a budgeted token is already in storage (a failover
	// must not refill it), and a new node sees it spent.
	e2 := newTestEnv(t, e.clock, nil, e.storage.Storage)
	wantDenied(t, e2.resolve(t, tok, "POST", "/v1/customers", ""), resolve.ReasonBudgetExhausted)

	// Route totals, after the periodic flush.
	e.periodic(t)
	u := e.ok(t, logical.ReadOperation, "routes/r", nil).Data["usage"].(map[string]any)
	if u["requests"] != uint64(2) || u["input_tokens"] != int64(300) || u["output_tokens"] != int64(700) {
		t.Fatalf("route usage: %v", u)
	}
	// Lowering the route's budget bites on live tokens.
	tok2, mint2 := e.mint(t, "r", nil)
	wantAllowed(t, e.resolve(t, tok2, "POST", "/v1/customers", ""))
	e.writeRoute(t, "r", llmRoute(map[string]any{"token_budget": 10}))
	report(t, e, map[string]any{"accessor": mint2.Data["accessor"], "input_tokens": 10})
	wantDenied(t, e.resolve(t, tok2, "POST", "/v1/customers", ""), resolve.ReasonBudgetExhausted)
}

// TestUsageReportsAreChecked: each report is checked on its own; a bad one
// is rejected alone, and the call's other reports still apply. Only a call
// of the wrong shape is refused whole.
func TestUsageReportsAreChecked(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "r", llmRoute(nil))
	_, mint := e.mint(t, "r", nil)
	accessor := mint.Data["accessor"].(string)
	_, victimMint := e.mint(t, "r", nil)
	victim := victimMint.Data["accessor"].(string)
	applied := int64(0)
	for name, bad := range map[string]map[string]any{
		"negative":     {"accessor": accessor, "input_tokens": -1},
		"no accessor":  {"input_tokens": 1},
		"not whole":    {"accessor": accessor, "input_tokens": 1.5},
		"huge":         {"accessor": accessor, "output_tokens": int64(resolve.MaxReportedTokens) + 1},
		"huge settled": {"accessor": accessor, "settled": int64(resolve.MaxReportedTokens) + 1},
		"not a number": {"accessor": accessor, "input_tokens": "7"},
		"bad accessor": {"accessor": 7},
	} {
		got := report(t, e, map[string]any{"accessor": victim, "input_tokens": 7}, bad,
			map[string]any{"accessor": victim, "output_tokens": 3})
		if got["applied"] != 2 || got["rejected"] != 1 || got["unknown_accessors"] != 0 {
			t.Errorf("%s: answer %v, want 2 applied and 1 rejected", name, got)
		}
		applied += 10
	}
	rd := e.ok(t, logical.ReadOperation, "tokens/"+accessor, nil).Data
	if rd["input_tokens"] != int64(0) || rd["output_tokens"] != int64(0) {
		t.Fatalf("a rejected report applied: %v %v", rd["input_tokens"], rd["output_tokens"])
	}
	rd = e.ok(t, logical.ReadOperation, "tokens/"+victim, nil).Data
	if got := rd["input_tokens"].(int64) + rd["output_tokens"].(int64); got != applied {
		t.Fatalf("the valid reports beside a rejected one: %d tokens counted, want %d", got, applied)
	}
	// Counts up to the bound are fine.
	if got := report(t, e, map[string]any{"accessor": accessor, "output_tokens": int64(resolve.MaxReportedTokens)}); got["applied"] != 1 {
		t.Fatalf("a report at MaxReportedTokens: %v", got)
	}
	// The wrong shape refuses the whole call.
	for name, reports := range map[string]any{
		"not objects": []any{map[string]any{"accessor": victim, "input_tokens": 1}, "x"},
		"empty":       []any{},
	} {
		resp, err := e.request(t, logical.PatchOperation, "usage", map[string]any{"reports": reports})
		if err != nil || !resp.IsError() {
			t.Errorf("%s: want a 400, got %v %v", name, resp, err)
		}
	}
	if rd := e.ok(t, logical.ReadOperation, "tokens/"+victim, nil).Data; rd["input_tokens"].(int64)+rd["output_tokens"].(int64) != applied {
		t.Fatalf("a call refused whole applied a report: %v", rd)
	}
	many := make([]any, resolve.MaxReports+1)
	for i := range many {
		many[i] = map[string]any{"accessor": accessor}
	}
	e.userError(t, logical.PatchOperation, "usage", map[string]any{"reports": many}, "at most")
}

// TestLimitsOutliveUsageFormat: a token whose own LLM limits outlive its
// route's usage_format is refused, not let through unmeasured.
func TestLimitsOutliveUsageFormat(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "r", llmRoute(nil))
	budgeted, _ := e.mint(t, "r", map[string]any{"token_budget": 100, "max_output_tokens": 10})
	modelled, _ := e.mint(t, "r", map[string]any{"allowed_models": "gpt-4o"})
	e.writeRoute(t, "r", map[string]any{"usage_format": ""})
	wantDenied(t, e.resolve(t, budgeted, "GET", "/v1/customers", ""), resolve.ReasonBudgetExhausted)
	wantDenied(t, e.resolve(t, modelled, "GET", "/v1/customers", ""), resolve.ReasonModelNotAllowed)
	plain, _ := e.mint(t, "r", nil)
	wantAllowed(t, e.resolve(t, plain, "GET", "/v1/customers", ""))
}

// TestRouteNarrowedModels: a route narrowed after a mint narrows its live
// tokens, and lists with nothing in common allow nothing.
func TestRouteNarrowedModels(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "r", llmRoute(map[string]any{"allowed_models": "gpt-*"}))
	tok, _ := e.mint(t, "r", map[string]any{"allowed_models": "gpt-4o*"})
	e.writeRoute(t, "r", llmRoute(map[string]any{"allowed_models": "gpt-4o-mini,gpt-4.1"}))
	d := e.resolve(t, tok, "GET", "/v1/customers", "")
	wantAllowed(t, d)
	if m := d["limits"].(map[string]any)["allowed_models"].([]string); len(m) != 1 || m[0] != "gpt-4o-mini" {
		t.Fatalf("allowed_models = %v, want [gpt-4o-mini]", m)
	}
	e.writeRoute(t, "r", llmRoute(map[string]any{"allowed_models": "claude-*"}))
	wantDenied(t, e.resolve(t, tok, "GET", "/v1/customers", ""), resolve.ReasonModelNotAllowed)
}

// TestLimitBookkeeping: a revoked token forgets its rate window at once, a
// lowered output cap bites on live tokens, and a route deleted and created
// again starts its usage totals afresh.
func TestLimitBookkeeping(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "r", llmRoute(map[string]any{"rate_limit": "5/1h", "max_output_tokens": 100}))
	tok, mint := e.mint(t, "r", nil)
	accessor := mint.Data["accessor"].(string)
	wantAllowed(t, e.resolve(t, tok, "GET", "/v1/customers", ""))
	if kept := e.b.limiter.sweep(e.clock.Now()); kept != 1 {
		t.Fatalf("%d windows, want the token's", kept)
	}
	e.writeRoute(t, "r", llmRoute(map[string]any{"max_output_tokens": 10}))
	if got := e.resolve(t, tok, "GET", "/v1/customers", "")["limits"].(map[string]any)["max_output_tokens"]; got != int64(10) {
		t.Fatalf("max_output_tokens = %v after the route lowered it to 10", got)
	}
	e.ok(t, logical.DeleteOperation, "tokens/"+accessor, nil)
	if kept := e.b.limiter.sweep(e.clock.Now()); kept != 0 {
		t.Fatalf("a revoked token kept its window (%d)", kept)
	}

	report(t, e, map[string]any{"accessor": accessor, "input_tokens": 5})
	e.periodic(t)
	if u := e.ok(t, logical.ReadOperation, "routes/r", nil).Data["usage"].(map[string]any); u["input_tokens"] != int64(5) || u["requests"] != uint64(2) {
		t.Fatalf("route usage %v", u)
	}
	e.ok(t, logical.DeleteOperation, "routes/r", nil)
	e.writeRoute(t, "r", llmRoute(nil))
	if u := e.ok(t, logical.ReadOperation, "routes/r", nil).Data["usage"].(map[string]any); u["input_tokens"] != int64(0) || u["requests"] != uint64(0) {
		t.Fatalf("a route created again inherited usage %v", u)
	}
}

// TestBudgetAcrossNodes: usage another node wrote to a token's record
// (while it was the active one) counts on this node when leadership comes
// back, on top of what this node still holds in memory.
func TestBudgetAcrossNodes(t *testing.T) {
	a := getTestBackend(t)
	a.writeRoute(t, "r", llmRoute(map[string]any{"token_budget": 100, "max_output_tokens": 10}))
	tok, mint := a.mint(t, "r", nil)
	accessor := mint.Data["accessor"].(string)
	wantAllowed(t, a.resolve(t, tok, "POST", "/v1/customers", ""))
	report(t, a, map[string]any{"accessor": accessor, "input_tokens": 30, "settled": 1})

	b := newTestEnv(t, a.clock, nil, a.storage.Storage)
	report(t, b, map[string]any{"accessor": accessor, "output_tokens": 50}) // written through: the record holds 80

	tokenHMAC, err := a.b.hmacToken(t.Context(), a.storage, tok)
	if err != nil {
		t.Fatal(err)
	}
	a.b.invalidate(t.Context(), tokenPrefix+tokenHMAC) // as Vault tells a node of a write elsewhere
	d := a.resolve(t, tok, "POST", "/v1/customers", "")
	wantAllowed(t, d)
	if got := d["limits"].(map[string]any)["budget_remaining"]; got != int64(20) {
		t.Fatalf("budget_remaining = %v, want 20: the other node's 50 were not counted", got)
	}
	report(t, a, map[string]any{"accessor": accessor, "input_tokens": 20, "settled": 1})
	wantDenied(t, a.resolve(t, tok, "POST", "/v1/customers", ""), resolve.ReasonBudgetExhausted)
	rd := a.ok(t, logical.ReadOperation, "tokens/"+accessor, nil).Data
	if rd["input_tokens"] != int64(50) || rd["output_tokens"] != int64(50) {
		t.Fatalf("token read: input %v output %v, want 50 and 50", rd["input_tokens"], rd["output_tokens"])
	}
	a.periodic(t)
	b.periodic(t)
	stored, err := getToken(t.Context(), a.storage, tokenHMAC)
	if err != nil || stored.InputTokens != 50 || stored.OutputTokens != 50 {
		t.Fatalf("stored record: %+v %v", stored, err)
	}
}

// TestBatchCarriesLimits: in a batch, each result carries its own limits
// and its own retry_after_ms.
func TestBatchCarriesLimits(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "r", llmRoute(map[string]any{"rate_limit": "1/1m", "max_output_tokens": 64}))
	tok, _ := e.mint(t, "r", nil)
	req := map[string]any{"token": tok, "method": "GET", "path": "/v1/customers"}
	d := e.ok(t, logical.PatchOperation, "resolve", map[string]any{"requests": []any{req, req}}).Data
	results := d["results"].([]map[string]any)
	wantAllowed(t, results[0])
	if lim, _ := results[0]["limits"].(map[string]any); lim["max_output_tokens"] != int64(64) || lim["usage_format"] != "openai" {
		t.Fatalf("first result's limits: %v", results[0]["limits"])
	}
	wantDenied(t, results[1], resolve.ReasonRateLimited)
	if results[1]["retry_after_ms"] != int64(60000) {
		t.Fatalf("second result's retry_after_ms: %v", results[1]["retry_after_ms"])
	}
}
