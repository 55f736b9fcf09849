package e2e

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/phantomvault/phantom/e2e/harness"
)

// TestLimitsEngine drives the engine's limits through a real Vault, the real
// plugin binary and two real proxies: a per-token rate limit gives 429 with
// Retry-After, two proxies share one limit (the engine decides), a route's
// limit spans its tokens, a mint cannot widen a limit, the proxy's AppRole
// reports usage that tokens/<accessor> and the route's totals show, and a
// spent budget kills the token.
func TestLimitsEngine(t *testing.T) {
	v := harness.StartDevVault(t)
	up := startUpstream(t, realKey)
	p1, p2 := harness.StartProxy(t, v), harness.StartProxy(t, v)
	proxyToken := v.AppRoleLogin(t, v.RoleIDFile, v.SecretIDFile)

	t.Run("rate limit gives 429 with Retry-After", func(t *testing.T) {
		v.MustCLI(t, "write", "phantom/routes/rl", "upstream="+up.URL, "allowed_paths=/v1/**", "allowed_methods=GET",
			"credential="+realKey, "rate_limit=3/1m")
		tok, _ := v.Mint(t, "rl")
		for i := range 3 {
			if code, body := p1.Call(t, "GET", "/v1/customers", tok); code != 200 {
				t.Fatalf("request %d of 3: %d %s", i+1, code, body)
			}
		}
		resp := limitsCall(t, p1, tok)
		if resp.code != 429 || !strings.Contains(resp.body, "rate_limited") {
			t.Fatalf("4th request: %d %s", resp.code, resp.body)
		}
		// 3 per minute: the next one conforms 20 s after the first.
		ra, err := strconv.Atoi(resp.header.Get("Retry-After"))
		if err != nil || ra < 1 || ra > 20 {
			t.Fatalf("Retry-After %q, want 1 to 20 seconds (headers %v)", resp.header.Get("Retry-After"), resp.header)
		}
		t.Logf("429 with Retry-After: %s (Retry-After-Ms: %s)", resp.header.Get("Retry-After"), resp.header.Get("Retry-After-Ms"))
	})

	t.Run("Retry-After is right and a 429 burns no use", func(t *testing.T) {
		v.MustCLI(t, "write", "phantom/routes/short", "upstream="+up.URL, "allowed_paths=/v1/**", "allowed_methods=GET",
			"credential="+realKey, "rate_limit=2/2s", "num_uses=3")
		tok, _ := v.Mint(t, "short")
		for i := range 2 {
			if code, body := p1.Call(t, "GET", "/v1/customers", tok); code != 200 {
				t.Fatalf("request %d of 2: %d %s", i+1, code, body)
			}
		}
		resp := limitsCall(t, p1, tok)
		if resp.code != 429 {
			t.Fatalf("3rd request: %d %s", resp.code, resp.body)
		}
		wait, err := strconv.Atoi(resp.header.Get("Retry-After-Ms"))
		if err != nil {
			sec, err := strconv.Atoi(resp.header.Get("Retry-After"))
			if err != nil {
				t.Fatalf("no Retry-After: %v", resp.header)
			}
			wait = sec * 1000
		}
		if wait < 1 || wait > 1000 {
			t.Fatalf("wait %d ms, want at most the 1 s emission interval", wait)
		}
		// An SDK that waits as told gets through, on its last use: the 429
		// spent none of the token's three.
		time.Sleep(time.Duration(wait) * time.Millisecond)
		if code, body := p1.Call(t, "GET", "/v1/customers", tok); code != 200 {
			t.Fatalf("after waiting the %d ms the proxy named: %d %s", wait, code, body)
		}
		if code, body := p1.Call(t, "GET", "/v1/customers", tok); code != 401 || !strings.Contains(body, "uses") {
			t.Fatalf("4th use of a 3-use token: %d %s", code, body)
		}
	})

	t.Run("two proxies share one limit", func(t *testing.T) {
		v.MustCLI(t, "write", "phantom/routes/shared", "upstream="+up.URL, "allowed_paths=/v1/**", "allowed_methods=GET",
			"credential="+realKey, "rate_limit=4/1h")
		tok, _ := v.Mint(t, "shared")
		for i, p := range []*harness.Proxy{p1, p2, p1, p2} {
			if code, body := p.Call(t, "GET", "/v1/customers", tok); code != 200 {
				t.Fatalf("request %d of 4: %d %s", i+1, code, body)
			}
		}
		for i, p := range []*harness.Proxy{p1, p2} {
			if code, body := p.Call(t, "GET", "/v1/customers", tok); code != 429 || !strings.Contains(body, "rate_limited") {
				t.Fatalf("5th request through proxy %d: %d %s", i+1, code, body)
			}
		}
	})

	t.Run("a route's limit spans its tokens", func(t *testing.T) {
		v.MustCLI(t, "write", "phantom/routes/quota", "upstream="+up.URL, "allowed_paths=/v1/**", "allowed_methods=GET",
			"credential="+realKey, "route_rate_limit=3/1h")
		a, _ := v.Mint(t, "quota")
		b, _ := v.Mint(t, "quota")
		for i, c := range []struct {
			p   *harness.Proxy
			tok string
		}{{p1, a}, {p2, b}, {p1, a}} {
			if code, body := c.p.Call(t, "GET", "/v1/customers", c.tok); code != 200 {
				t.Fatalf("request %d of the route's 3: %d %s", i+1, code, body)
			}
		}
		if code, body := p2.Call(t, "GET", "/v1/customers", b); code != 429 {
			t.Fatalf("4th request of the route, by another token: %d %s", code, body)
		}
	})

	t.Run("a mint cannot widen a limit", func(t *testing.T) {
		for _, arg := range []string{"rate_limit=10/1m", "rate_limit=6/2m", "rate_limit="} {
			_, errOut, err := v.Run(t, "read", "phantom/token/rl", arg)
			if err == nil || !strings.Contains(errOut, "Code: 400") || !strings.Contains(errOut, "rate_limit") {
				t.Fatalf("mint with %s: err=%v (a token was minted)\n%s", arg, err, errOut) // the output would hold the token
			}
		}
		v.Mint(t, "rl", "rate_limit=1/1m") // narrower is fine
	})

	t.Run("usage reports and budgets", func(t *testing.T) {
		v.MustCLI(t, "write", "phantom/routes/llm", "upstream="+up.URL, "allowed_paths=/v1/**", "allowed_methods=GET,POST",
			"credential="+realKey, "usage_format=openai", "token_budget=1000", "max_output_tokens=256", "allowed_models=gpt-4o*")
		tok, accessor := v.MintAccessor(t, "llm", "allowed_models=gpt-4o-mini")

		// The proxy's resolve hands down the limits.
		d := limitsPatch(t, v, proxyToken, "phantom/resolve", map[string]any{
			"token": tok, "method": "POST", "path": "/v1/chat/completions", "client_ip": "127.0.0.1"})
		lim, _ := d["limits"].(map[string]any)
		if d["allowed"] != true || lim["usage_format"] != "openai" || lim["budget_remaining"] != float64(1000) ||
			lim["max_output_tokens"] != float64(256) || !slices1(lim["allowed_models"], "gpt-4o-mini") {
			t.Fatalf("resolve: allowed=%v limits=%v", d["allowed"], lim)
		}

		// The proxy reports usage with its own AppRole token, and settles
		// the request it resolved.
		got := limitsPatch(t, v, proxyToken, "phantom/usage", map[string]any{"reports": []any{
			map[string]any{"accessor": accessor, "input_tokens": 600, "output_tokens": 100, "settled": 1},
			map[string]any{"accessor": "pha_nobody", "input_tokens": 5},
		}})
		if got["applied"] != float64(1) || got["unknown_accessors"] != float64(1) || got["rejected"] != float64(0) {
			t.Fatalf("usage answer: %v", got)
		}
		info := v.JSON(t, "read", "phantom/tokens/"+accessor)["data"].(map[string]any)
		if info["input_tokens"] != float64(600) || info["output_tokens"] != float64(100) || info["budget_remaining"] != float64(300) ||
			info["requests"] != float64(1) || info["token_budget"] != float64(1000) || info["status"] != "active" {
			t.Fatalf("tokens/<accessor>: %v", info)
		}
		usage := v.JSON(t, "read", "phantom/routes/llm")["data"].(map[string]any)["usage"].(map[string]any)
		if usage["requests"] != float64(1) || usage["input_tokens"] != float64(600) || usage["output_tokens"] != float64(100) {
			t.Fatalf("route totals: %v", usage)
		}

		// Spend the rest: the token is dead, through the proxy too.
		limitsPatch(t, v, proxyToken, "phantom/usage", map[string]any{"reports": []any{
			map[string]any{"accessor": accessor, "output_tokens": 300},
		}})
		d = limitsPatch(t, v, proxyToken, "phantom/resolve", map[string]any{
			"token": tok, "method": "POST", "path": "/v1/chat/completions", "client_ip": "127.0.0.1"})
		if d["allowed"] != false || d["reason"] != "budget_exhausted" {
			t.Fatalf("resolve after the budget is spent: %v", redact(d))
		}
		if code, body := p1.Call(t, "GET", "/v1/models", tok); code != 401 || !strings.Contains(body, "budget") {
			t.Fatalf("through the proxy after the budget is spent: %d %s", code, body)
		}
		if st := v.JSON(t, "read", "phantom/tokens/"+accessor)["data"].(map[string]any)["status"]; st != "budget_exhausted" {
			t.Fatalf("status %v", st)
		}
		// Only the proxy reports: an issuer, an admin or a phantom token cannot.
		issuerToken := strings.TrimSpace(v.MustCLI(t, "token", "create", "-policy=phantom-issuer", "-field=token"))
		adminToken := strings.TrimSpace(v.MustCLI(t, "token", "create", "-policy=phantom-admin", "-field=token"))
		for who, token := range map[string]string{"phantom token": tok, "issuer": issuerToken, "admin": adminToken} {
			if code := limitsPatchStatus(t, v, token, "phantom/usage", map[string]any{"reports": []any{
				map[string]any{"accessor": accessor, "input_tokens": 1}}}); code != 403 {
				t.Fatalf("%s reporting usage: %d, want 403", who, code)
			}
		}
	})
}

type limitsResponse struct {
	code   int
	header http.Header
	body   string
}

// limitsCall is harness.Proxy.Call that keeps the response headers.
func limitsCall(t *testing.T, p *harness.Proxy, token string) limitsResponse {
	t.Helper()
	code, body, header := p.Do(t, "GET", "/v1/customers", token, "", nil)
	return limitsResponse{code, header, body}
}

// limitsPatch calls Vault's HTTP API with PATCH and a Vault token, as the
// proxy does, and returns the answer's data.
func limitsPatch(t *testing.T, v *harness.Vault, token, path string, body any) map[string]any {
	t.Helper()
	code, m := limitsPatchDo(t, v, token, path, body)
	if code != 200 {
		t.Fatalf("PATCH %s: %d %v", path, code, m["errors"])
	}
	data, _ := m["data"].(map[string]any)
	return data
}

func limitsPatchStatus(t *testing.T, v *harness.Vault, token, path string, body any) int {
	t.Helper()
	code, _ := limitsPatchDo(t, v, token, path, body)
	return code
}

func limitsPatchDo(t *testing.T, v *harness.Vault, token, path string, body any) (int, map[string]any) {
	t.Helper()
	return v.API(t, http.MethodPatch, path, token, body)
}

// slices1 reports whether v is a JSON list of exactly one string, want.
func slices1(v any, want string) bool {
	l, ok := v.([]any)
	return ok && len(l) == 1 && l[0] == want
}

// TestLimitsAcrossRestart restarts a persistent Vault, as a leader failover
// or a plugin reload would: a spent budget stays spent (budgeted usage is
// written when reported), while rate-limit windows, kept in memory only,
// start afresh: at most one more burst, as SECURITY.md says.
func TestLimitsAcrossRestart(t *testing.T) {
	v := harness.StartPersistentVault(t)
	up := startUpstream(t, realKey)
	usageRoute(t, v, "llm", up.URL, "/v1/**", "anthropic", "token_budget=1000", "max_output_tokens=30", "rate_limit=2/1h")
	tok, accessor := v.MintAccessor(t, "llm")
	resolveOnce := func() map[string]any {
		t.Helper()
		return limitsPatch(t, v, v.Token, "phantom/resolve", map[string]any{
			"token": tok, "method": "POST", "path": "/v1/messages", "client_ip": "127.0.0.1"})
	}
	for i := range 2 {
		if d := resolveOnce(); d["allowed"] != true {
			t.Fatalf("request %d: %v", i+1, d["reason"])
		}
	}
	if d := resolveOnce(); d["reason"] != "rate_limited" {
		t.Fatalf("3rd request: %v", d["reason"])
	}
	limitsPatch(t, v, v.Token, "phantom/usage", map[string]any{"reports": []any{
		map[string]any{"accessor": accessor, "input_tokens": 400, "output_tokens": 500, "settled": 2},
	}})

	v.Restart(t)

	// The windows start afresh: one more burst of 2 ...
	for i := range 2 {
		if d := resolveOnce(); d["allowed"] != true {
			t.Fatalf("request %d after the restart: %v", i+1, d["reason"])
		}
	}
	if d := resolveOnce(); d["reason"] != "rate_limited" {
		t.Fatalf("3rd request after the restart: %v", d["reason"])
	}
	// ... and the budget is where it was: 100 left, less the 2 * 30 the
	// requests since reserve; then spent.
	info := v.JSON(t, "read", "phantom/tokens/"+accessor)["data"].(map[string]any)
	if info["budget_remaining"] != float64(40) || info["budget_reserved"] != float64(60) || info["input_tokens"] != float64(400) {
		t.Fatalf("after the restart: budget_remaining=%v budget_reserved=%v input_tokens=%v",
			info["budget_remaining"], info["budget_reserved"], info["input_tokens"])
	}
	limitsPatch(t, v, v.Token, "phantom/usage", map[string]any{"reports": []any{
		map[string]any{"accessor": accessor, "output_tokens": 100, "settled": 2},
	}})
	v.Restart(t)
	if st := v.JSON(t, "read", "phantom/tokens/"+accessor)["data"].(map[string]any)["status"]; st != "budget_exhausted" {
		t.Fatalf("status after the budget was spent and Vault restarted: %v", st)
	}
	if d := resolveOnce(); d["reason"] != "budget_exhausted" {
		t.Fatalf("resolve after the budget was spent and Vault restarted: %v", d["reason"])
	}
}

// TestLimitsHAFailover: a 3-node Raft cluster with two proxies, each talking
// to a standby. One rate limit holds across both (every resolve reaches the
// active node); usage reported through a standby counts; after the leader is
// killed, a spent budget stays spent on the new leader, while rate windows
// start afresh there (one more burst).
func TestLimitsHAFailover(t *testing.T) {
	nodes := harness.StartRaftCluster(t, 3)
	leader := nodes[0]
	up := startUpstream(t, realKey)
	all := "-vault-addr=" + harness.Addrs(nodes)
	proxies := []*harness.Proxy{harness.StartProxy(t, nodes[1], all), harness.StartProxy(t, nodes[2], all)}
	// The budgeted token is only sent once spent, so what the proxy does
	// with usage it cannot measure does not matter here.
	leader.MustCLI(t, "write", "phantom/routes/rl", "upstream="+up.URL, "allowed_paths=/v1/**", "allowed_methods=GET",
		"credential="+realKey, "rate_limit=4/1h")
	leader.MustCLI(t, "write", "phantom/routes/llm", "upstream="+up.URL, "allowed_paths=/v1/**", "allowed_methods=GET",
		"credential="+realKey, "usage_format=openai", "token_budget=100", "max_output_tokens=10")
	limited, _ := nodes[1].Mint(t, "rl")
	spent, accessor := nodes[2].MintAccessor(t, "llm")

	for i, p := range []*harness.Proxy{proxies[0], proxies[1], proxies[0], proxies[1]} {
		if code, body := p.Call(t, "GET", "/v1/customers", limited); code != 200 {
			t.Fatalf("request %d of 4: %d %s", i+1, code, body)
		}
	}
	for i, p := range proxies {
		if code, body := p.Call(t, "GET", "/v1/customers", limited); code != 429 {
			t.Fatalf("5th request through proxy %d: %d %s", i+1, code, body)
		}
	}

	// Usage reported through a standby reaches the active node.
	limitsPatch(t, nodes[1], nodes[1].Token, "phantom/usage", map[string]any{"reports": []any{
		map[string]any{"accessor": accessor, "input_tokens": 60, "output_tokens": 40},
	}})
	for i, p := range proxies {
		if code, body := p.Call(t, "GET", "/v1/customers", spent); code != 401 || !strings.Contains(body, "budget_exhausted") {
			t.Fatalf("spent token through proxy %d: %d %s", i+1, code, body)
		}
	}

	leader.Crash()
	// The token whose 4 per hour were spent serves again on the new leader:
	// its window started afresh there.
	for i, p := range proxies {
		servesAgain(t, p, limited, 90*time.Second, "proxy %d never served again after the failover:\n%s", i+1, p.Out)
	}
	for i, p := range proxies {
		if code, body := p.Call(t, "GET", "/v1/customers", spent); code != 401 || !strings.Contains(body, "budget_exhausted") {
			t.Fatalf("spent token through proxy %d after the failover: %d %s", i+1, code, body)
		}
	}
}

// TestLimitsBudgetReservations drives budget reservations through a real
// Vault, the real plugin and a real proxy: each request admitted under a
// budget holds its output cap until the proxy settles it, so no more than
// ceil(budget/cap) requests are in flight at once (the rest get 429
// budget_pending); settling through the usage path, with the proxy's own
// AppRole token, frees what the requests did not spend; one report with a
// bad count is rejected alone while the others in its call apply; and a
// budget without a cap is refused.
func TestLimitsBudgetReservations(t *testing.T) {
	v := harness.StartDevVault(t)
	up := startHeldUpstream(t, 3)
	p := harness.StartProxy(t, v)
	proxyToken := v.AppRoleLogin(t, v.RoleIDFile, v.SecretIDFile)
	tokenInfo := func(accessor string) map[string]any {
		t.Helper()
		return v.JSON(t, "read", "phantom/tokens/"+accessor)["data"].(map[string]any)
	}

	t.Run("requests in flight hold the budget, through the proxy", func(t *testing.T) {
		// ceil(1000/400) = 3 requests may be in flight at once.
		v.MustCLI(t, "write", "phantom/routes/held", "upstream="+up.URL, "allowed_paths=/v1/**", "allowed_methods=GET",
			"credential="+realKey, "usage_format=openai", "token_budget=1000", "max_output_tokens=400")
		tok, accessor := v.MintAccessor(t, "held")
		done := make(chan int, 3)
		defer up.releaseAll() // however the test ends
		for range 3 {
			go func() { done <- plainGet(p.URL+"/v1/customers", tok) }()
		}
		for i := range 3 {
			select {
			case <-up.arrived:
			case <-time.After(15 * time.Second):
				t.Fatalf("only %d of 3 requests reached the upstream:\n%s", i, p.Out)
			}
		}
		resp := limitsCall(t, p, tok)
		if resp.code != 429 || !strings.Contains(resp.body, `"budget_pending"`) || resp.header.Get("Retry-After") == "" {
			t.Fatalf("a 4th request while 3 hold the budget: %d %s (headers %v)", resp.code, resp.body, resp.header)
		}
		info := tokenInfo(accessor)
		if info["budget_reserved"] != float64(1200) || info["budget_in_flight"] != float64(3) || info["budget_remaining"] != float64(0) ||
			info["status"] != "active" {
			t.Fatalf("tokens/<accessor> with 3 in flight: reserved %v in flight %v remaining %v status %v",
				info["budget_reserved"], info["budget_in_flight"], info["budget_remaining"], info["status"])
		}
		up.releaseAll()
		for range 3 {
			if code := <-done; code != 200 {
				t.Fatalf("a request in flight ended with %d", code)
			}
		}
		t.Logf("3 in flight, the 4th: %d %s (Retry-After %s)", resp.code, resp.body, resp.header.Get("Retry-After"))
	})

	t.Run("settling frees the budget; a rejected report stops no other", func(t *testing.T) {
		v.MustCLI(t, "write", "phantom/routes/settle", "upstream="+up.URL, "allowed_paths=/v1/**", "allowed_methods=GET,POST",
			"credential="+realKey, "usage_format=openai", "token_budget=1000", "max_output_tokens=300")
		tok, accessor := v.MintAccessor(t, "settle")
		victim, victimAccessor := v.MintAccessor(t, "settle", "token_budget=500")
		resolveOnce := func(tok string) map[string]any {
			t.Helper()
			return limitsPatch(t, v, proxyToken, "phantom/resolve", map[string]any{
				"token": tok, "method": "POST", "path": "/v1/chat/completions", "client_ip": "127.0.0.1"})
		}
		for i, want := range []float64{1000, 700, 400, 100} {
			d := resolveOnce(tok)
			if lim, _ := d["limits"].(map[string]any); d["allowed"] != true || lim["budget_remaining"] != want {
				t.Fatalf("request %d: allowed=%v reason=%v limits=%v, want budget_remaining %v", i+1, d["allowed"], d["reason"], d["limits"], want)
			}
		}
		if d := resolveOnce(tok); d["reason"] != "budget_pending" || d["retry_after_ms"] != float64(1000) {
			t.Fatalf("5th request with 4 in flight: %v", redact(d))
		}
		if info := tokenInfo(accessor); info["budget_reserved"] != float64(1200) || info["budget_in_flight"] != float64(4) {
			t.Fatalf("tokens/<accessor>: reserved %v in flight %v", info["budget_reserved"], info["budget_in_flight"])
		}
		wantAllowedE2E(t, resolveOnce(victim))

		// One call: two requests of tok settle having spent 300, a report
		// with a count no usage reaches is rejected, and the victim's
		// usage, after it, applies all the same.
		got := limitsPatch(t, v, proxyToken, "phantom/usage", map[string]any{"reports": []any{
			map[string]any{"accessor": accessor, "input_tokens": 50, "output_tokens": 250, "settled": 2},
			map[string]any{"accessor": accessor, "output_tokens": int64(1)<<40 + 1, "settled": 2},
			map[string]any{"accessor": victimAccessor, "input_tokens": 200, "output_tokens": 300, "settled": 1},
		}})
		if got["applied"] != float64(2) || got["rejected"] != float64(1) || got["unknown_accessors"] != float64(0) {
			t.Fatalf("usage answer: %v", got)
		}
		info := tokenInfo(accessor)
		if info["budget_reserved"] != float64(600) || info["budget_in_flight"] != float64(2) || info["budget_remaining"] != float64(100) ||
			info["input_tokens"] != float64(50) || info["output_tokens"] != float64(250) {
			t.Fatalf("tokens/<accessor> after settling 2: %v", info)
		}
		if d := resolveOnce(tok); d["allowed"] != true || d["limits"].(map[string]any)["budget_remaining"] != float64(100) {
			t.Fatalf("after two settled: %v", redact(d))
		}
		// The victim's usage counted: its budget is spent.
		if code, body := p.Call(t, "GET", "/v1/customers", victim); code != 401 || !strings.Contains(body, "budget_exhausted") {
			t.Fatalf("the victim after its usage was reported beside a rejected report: %d %s", code, body)
		}
		if st := tokenInfo(victimAccessor)["status"]; st != "budget_exhausted" {
			t.Fatalf("victim status %v", st)
		}
	})

	t.Run("a budget needs a cap", func(t *testing.T) {
		_, errOut, err := v.Run(t, "write", "phantom/routes/nocap", "upstream="+up.URL, "allowed_paths=/v1/**", "allowed_methods=GET",
			"credential="+realKey, "usage_format=openai", "token_budget=1000")
		if err == nil || !strings.Contains(errOut, "token_budget needs max_output_tokens") {
			t.Fatalf("route with a budget and no cap: err=%v\n%s", err, errOut)
		}
		v.MustCLI(t, "write", "phantom/routes/nocap", "upstream="+up.URL, "allowed_paths=/v1/**", "allowed_methods=GET",
			"credential="+realKey, "usage_format=openai")
		if _, errOut, err := v.Run(t, "read", "phantom/token/nocap", "token_budget=100"); err == nil || !strings.Contains(errOut, "max_output_tokens") {
			t.Fatalf("mint with a budget and no cap: err=%v", err) // the output would hold the token
		}
		v.Mint(t, "nocap", "token_budget=100", "max_output_tokens=10")
	})
}

// plainGet is a GET with a phantom token that needs no *testing.T (it may
// outlive a failed test): the status, or -1 when the call failed.
func plainGet(url, token string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return -1
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return -1
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func wantAllowedE2E(t *testing.T, d map[string]any) {
	t.Helper()
	if d["allowed"] != true {
		t.Fatalf("want allowed, got %v: %v", d["reason"], d["message"])
	}
}

// heldUpstream answers its first hold requests only once released, so that
// a test can keep requests in flight; later ones at once.
type heldUpstream struct {
	*harness.Upstream
	arrived  chan struct{} // one per request held
	release  chan struct{}
	once     sync.Once
	received atomic.Int64
}

func startHeldUpstream(t *testing.T, hold int64) *heldUpstream {
	t.Helper()
	u := &heldUpstream{arrived: make(chan struct{}, hold), release: make(chan struct{})}
	u.Upstream = harness.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u.received.Add(1) <= hold {
			u.arrived <- struct{}{}
			select {
			case <-u.release:
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"object":"list"}`)
	}))
	t.Cleanup(u.releaseAll) // before the server closes
	return u
}

func (u *heldUpstream) releaseAll() { u.once.Do(func() { close(u.release) }) }
