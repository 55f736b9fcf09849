package e2e

import (
	"net/http"
	"strconv"
	"strings"
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
