package e2e

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/phantomvault/phantom/e2e/harness"
)

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
