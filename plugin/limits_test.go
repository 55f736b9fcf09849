package plugin

import (
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/phantomvault/phantom/internal/resolve"
)

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
	if kept := e.b.limiter.Sweep(time.Unix(0, 0)); kept != 0 {
		t.Fatalf("%d rate windows kept for a route without a rate limit", kept)
	}
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
	if kept := e.b.limiter.Sweep(e.clock.Now()); kept != 1 {
		t.Fatalf("%d windows, want the token's", kept)
	}
	e.writeRoute(t, "r", llmRoute(map[string]any{"max_output_tokens": 10}))
	if got := e.resolve(t, tok, "GET", "/v1/customers", "")["limits"].(map[string]any)["max_output_tokens"]; got != int64(10) {
		t.Fatalf("max_output_tokens = %v after the route lowered it to 10", got)
	}
	e.ok(t, logical.DeleteOperation, "tokens/"+accessor, nil)
	if kept := e.b.limiter.Sweep(e.clock.Now()); kept != 0 {
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

func TestRetryAfterMS(t *testing.T) {
	if retryAfterMS(time.Nanosecond) != 1 || retryAfterMS(1500*time.Microsecond) != 2 || retryAfterMS(time.Second) != 1000 {
		t.Error("retryAfterMS must round up to whole milliseconds, at least 1")
	}
}
