package plugin

import (
	"context"
	"crypto/rand"
	"errors"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/phantomvault/phantom/internal/limits"
	"github.com/phantomvault/phantom/internal/resolve"
)

// budgetState is what tokens/<accessor> shows of a budget.
func budgetState(t *testing.T, e *testEnv, accessor string) (remaining, reserved int64, inFlight int) {
	t.Helper()
	d := e.ok(t, logical.ReadOperation, "tokens/"+accessor, nil).Data
	return d["budget_remaining"].(int64), d["budget_reserved"].(int64), d["budget_in_flight"].(int)
}

func remainingOf(t *testing.T, d map[string]any) int64 {
	t.Helper()
	wantAllowed(t, d)
	return d["limits"].(map[string]any)["budget_remaining"].(int64)
}

// TestBudgetReservesInFlight: sequential requests beyond the budget are
// refused while their usage is not in (budget_pending, a 429 that spends no
// rate and no use), and once settled usage spends the budget the token is
// dead (budget_exhausted).
func TestBudgetReservesInFlight(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "r", llmRoute(map[string]any{"token_budget": 1000, "max_output_tokens": 300, "rate_limit": "100/1h", "num_uses": 50}))
	tok, mint := e.mint(t, "r", nil)
	accessor := mint.Data["accessor"].(string)

	// ceil(1000/300) = 4 requests in flight, each told what is left
	// before its own reservation.
	for i, want := range []int64{1000, 700, 400, 100} {
		if got := remainingOf(t, e.resolve(t, tok, "POST", "/v1/customers", "")); got != want {
			t.Fatalf("request %d: budget_remaining %d, want %d", i+1, got, want)
		}
	}
	if rem, res, n := budgetState(t, e, accessor); rem != 0 || res != 1200 || n != 4 {
		t.Fatalf("token read: remaining %d reserved %d in flight %d, want 0, 1200, 4", rem, res, n)
	}
	rd := e.ok(t, logical.ReadOperation, "tokens/"+accessor, nil).Data
	rateLeft, usesLeft := rd["rate_limit_remaining"], rd["num_uses"].(int)-rd["uses"].(int)
	d := e.resolve(t, tok, "POST", "/v1/customers", "")
	wantDenied(t, d, resolve.ReasonBudgetPending)
	if d["retry_after_ms"] != int64(1000) {
		t.Fatalf("retry_after_ms = %v, want 1000", d["retry_after_ms"])
	}
	rd = e.ok(t, logical.ReadOperation, "tokens/"+accessor, nil).Data
	if rd["rate_limit_remaining"] != rateLeft || rd["num_uses"].(int)-rd["uses"].(int) != usesLeft || rd["status"] != "active" {
		t.Fatalf("budget_pending spent rate (%v -> %v) or a use (%d -> %d), or status %v",
			rateLeft, rd["rate_limit_remaining"], usesLeft, rd["num_uses"].(int)-rd["uses"].(int), rd["status"])
	}

	// Two settle, having spent 300: 1000 - 300 - 2*300 = 100 is free.
	report(t, e, map[string]any{"accessor": accessor, "input_tokens": 50, "output_tokens": 250, "settled": 2})
	if got := remainingOf(t, e.resolve(t, tok, "POST", "/v1/customers", "")); got != 100 {
		t.Fatalf("after two settled: budget_remaining %d, want 100", got)
	}
	wantDenied(t, e.resolve(t, tok, "POST", "/v1/customers", ""), resolve.ReasonBudgetPending)
	// Settling more than is held releases what there is, never below 0.
	report(t, e, map[string]any{"accessor": accessor, "output_tokens": 700, "settled": 9})
	wantDenied(t, e.resolve(t, tok, "POST", "/v1/customers", ""), resolve.ReasonBudgetExhausted)
	if rem, res, n := budgetState(t, e, accessor); rem != 0 || res != 0 || n != 0 {
		t.Fatalf("spent token: remaining %d reserved %d in flight %d", rem, res, n)
	}
}

// TestBudgetParallelResolves: however many resolves run at once, with cap C
// and budget B no more than ceil(B/C) requests are in flight at a time:
// check and reservation are one step.
func TestBudgetParallelResolves(t *testing.T) {
	e := getTestBackend(t)
	const budget, capTokens = 1000, 300
	e.writeRoute(t, "r", llmRoute(map[string]any{"token_budget": budget, "max_output_tokens": capTokens}))
	tok, mint := e.mint(t, "r", nil)
	numUses, _ := e.mint(t, "r", map[string]any{"num_uses": 1000}) // resolved under the token lock
	accessor := mint.Data["accessor"].(string)
	const most = (budget + capTokens - 1) / capTokens

	// Without settles: exactly ceil(B/C) of many simultaneous resolves.
	var allowed atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range 32 {
		wg.Go(func() {
			<-start
			if e.resolve(t, tok, "POST", "/v1/customers", "")["allowed"] == true {
				allowed.Add(1)
			}
		})
	}
	close(start)
	wg.Wait()
	if allowed.Load() != most {
		t.Fatalf("%d of 32 simultaneous requests allowed, want ceil(%d/%d) = %d", allowed.Load(), budget, capTokens, most)
	}
	report(t, e, map[string]any{"accessor": accessor, "settled": most})

	// With settles racing resolves: never more than ceil(B/C) in flight.
	for _, tk := range []string{tok, numUses} {
		var inFlight, peak, admitted atomic.Int64
		for range 8 {
			wg.Go(func() {
				for range 40 {
					d := e.resolve(t, tk, "POST", "/v1/customers", "")
					if d["allowed"] != true {
						continue
					}
					admitted.Add(1)
					n := inFlight.Add(1)
					for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
					}
					time.Sleep(100 * time.Microsecond) // in flight: let the others try
					inFlight.Add(-1)
					report(t, e, map[string]any{"accessor": d["accessor"], "settled": 1})
				}
			})
		}
		wg.Wait()
		if peak.Load() > most || admitted.Load() < most {
			t.Fatalf("peak %d in flight (admitted %d), want at most %d", peak.Load(), admitted.Load(), most)
		}
		t.Logf("%d admitted, at most %d in flight at once", admitted.Load(), peak.Load())
	}
}

// TestBudgetReservationsExpire: a reservation never settled (a proxy that
// died) stops holding the budget an hour after it was made, at resolve and
// in the periodic sweep.
func TestBudgetReservationsExpire(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "r", llmRoute(map[string]any{"token_budget": 100, "max_output_tokens": 100}))
	tok, mint := e.mint(t, "r", nil)
	accessor := mint.Data["accessor"].(string)
	wantAllowed(t, e.resolve(t, tok, "POST", "/v1/customers", ""))
	e.clock.Advance(limits.ReservationTTL - time.Second)
	wantDenied(t, e.resolve(t, tok, "POST", "/v1/customers", ""), resolve.ReasonBudgetPending)
	e.clock.Advance(time.Second)
	if _, res, n := budgetState(t, e, accessor); res != 0 || n != 0 {
		t.Fatalf("an expired reservation still shows: %d in %d", res, n)
	}
	if got := remainingOf(t, e.resolve(t, tok, "POST", "/v1/customers", "")); got != 100 {
		t.Fatalf("after expiry: budget_remaining %d, want 100", got)
	}

	// The sweep drops them without a resolve.
	tok2, _ := e.mint(t, "r", nil)
	wantAllowed(t, e.resolve(t, tok2, "POST", "/v1/customers", ""))
	e.clock.Advance(limits.ReservationTTL)
	e.periodic(t)
	held := 0
	e.b.usage.m.Range(func(_, v any) bool {
		held += v.(*usage).res.Len()
		return true
	})
	if held != 0 {
		t.Fatalf("%d reservations held after the sweep", held)
	}
}

// TestBudgetRateLimitedReservesNothing: a request the rate limit refuses
// after the budget admitted it holds nothing of the budget.
func TestBudgetRateLimitedReservesNothing(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "r", llmRoute(map[string]any{"token_budget": 1000, "max_output_tokens": 100, "rate_limit": "1/1h"}))
	tok, mint := e.mint(t, "r", nil)
	wantAllowed(t, e.resolve(t, tok, "POST", "/v1/customers", ""))
	wantDenied(t, e.resolve(t, tok, "POST", "/v1/customers", ""), resolve.ReasonRateLimited)
	if _, res, n := budgetState(t, e, mint.Data["accessor"].(string)); res != 100 || n != 1 {
		t.Fatalf("reserved %d by %d requests, want the one allowed's 100", res, n)
	}
}

// TestBudgetNeedsCap: a budget without a per-request output cap is refused
// at route write and at mint; a budgeted token's cap is fixed at mint.
func TestBudgetNeedsCap(t *testing.T) {
	e := getTestBackend(t)
	e.userError(t, logical.UpdateOperation, "routes/r", map[string]any{
		"upstream": "https://api.example.com", "allowed_paths": "/x", "allowed_methods": "GET", "credential": testCredential,
		"usage_format": "openai", "token_budget": 100,
	}, "token_budget needs max_output_tokens")
	e.writeRoute(t, "r", llmRoute(map[string]any{"token_budget": 100, "max_output_tokens": 10}))
	e.userError(t, logical.UpdateOperation, "routes/r", map[string]any{"max_output_tokens": 0}, "token_budget needs max_output_tokens")

	e.writeRoute(t, "uncapped", llmRoute(nil))
	e.userError(t, logical.UpdateOperation, "token/uncapped", map[string]any{"token_budget": 100}, "token_budget needs max_output_tokens")
	tok, _ := e.mint(t, "uncapped", map[string]any{"token_budget": 100, "max_output_tokens": 40})
	if got := remainingOf(t, e.resolve(t, tok, "POST", "/v1/customers", "")); got != 100 {
		t.Fatalf("budget_remaining %d", got)
	}

	// A route with a budget and a cap: its tokens keep the cap even if the
	// route later drops its budget and then its cap.
	capped, _ := e.mint(t, "r", nil)
	e.writeRoute(t, "r", map[string]any{"token_budget": 0})
	e.writeRoute(t, "r", map[string]any{"max_output_tokens": 0})
	d := e.resolve(t, capped, "POST", "/v1/customers", "")
	wantAllowed(t, d)
	if lim := d["limits"].(map[string]any); lim["max_output_tokens"] != int64(10) || lim["budget_remaining"] != int64(100) {
		t.Fatalf("limits after the route dropped budget and cap: %v", lim)
	}
}

// TestBudgetWithoutCapStored: a budget stored without a cap (before caps
// were required) reserves nothing: it still works as before.
func TestBudgetWithoutCapStored(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "r", llmRoute(map[string]any{"token_budget": 100, "max_output_tokens": 10}))
	tok, mint := e.mint(t, "r", nil)
	ctx := context.Background()
	route, err := getRoute(ctx, e.storage, "r")
	if err != nil {
		t.Fatal(err)
	}
	route.Limits.MaxOutputTokens = 0
	if err := putRoute(ctx, e.storage, "r", route); err != nil {
		t.Fatal(err)
	}
	tokenHMAC, err := e.b.hmacToken(ctx, e.storage, tok)
	if err != nil {
		t.Fatal(err)
	}
	te, err := getToken(ctx, e.storage, tokenHMAC)
	if err != nil {
		t.Fatal(err)
	}
	te.Limits.MaxOutputTokens = 0
	if err := putToken(ctx, e.storage, tokenHMAC, te); err != nil {
		t.Fatal(err)
	}
	e.b.invalidate(ctx, routePrefix+"r")
	e.b.invalidate(ctx, tokenPrefix+tokenHMAC)
	for range 5 {
		if got := remainingOf(t, e.resolve(t, tok, "POST", "/v1/customers", "")); got != 100 {
			t.Fatalf("budget_remaining %d, want 100 (nothing reserved without a cap)", got)
		}
	}
	report(t, e, map[string]any{"accessor": mint.Data["accessor"], "output_tokens": 100, "settled": 5})
	wantDenied(t, e.resolve(t, tok, "POST", "/v1/customers", ""), resolve.ReasonBudgetExhausted)
}

// failingPuts is storage whose writes of token records fail while fail is set.
type failingPuts struct {
	logical.Storage
	fail atomic.Bool
}

func (s *failingPuts) Put(ctx context.Context, e *logical.StorageEntry) error {
	if s.fail.Load() && strings.HasPrefix(e.Key, tokenPrefix) {
		return errors.New("storage is failing")
	}
	return s.Storage.Put(ctx, e)
}

// TestBudgetAnswerLostReservesNothing: when counting a use fails after the
// budget admitted a request, the proxy gets an error, not the answer, and
// will never settle it: the reservation is undone, in a batch for every
// allowed answer of the failed call.
func TestBudgetAnswerLostReservesNothing(t *testing.T) {
	storage := &failingPuts{Storage: &logical.InmemStorage{}}
	e := newTestEnv(t, &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}, rand.Reader, storage)
	e.writeRoute(t, "r", llmRoute(map[string]any{"token_budget": 1000, "max_output_tokens": 100}))
	plain, mint := e.mint(t, "r", nil)
	counted, countedMint := e.mint(t, "r", map[string]any{"num_uses": 10})

	storage.fail.Store(true)
	if _, err := e.request(t, logical.PatchOperation, "resolve", map[string]any{"token": counted, "method": "POST", "path": "/v1/customers"}); err == nil {
		t.Fatal("resolve succeeded while storage failed")
	}
	req := func(tok string) any { return map[string]any{"token": tok, "method": "POST", "path": "/v1/customers"} }
	if _, err := e.request(t, logical.PatchOperation, "resolve", map[string]any{"requests": []any{req(plain), req(plain), req(counted)}}); err == nil {
		t.Fatal("batch succeeded while storage failed")
	}
	storage.fail.Store(false)
	for name, m := range map[string]*logical.Response{"token": mint, "num_uses token": countedMint} {
		if _, res, n := budgetState(t, e, m.Data["accessor"].(string)); res != 0 || n != 0 {
			t.Errorf("%s: answers never sent hold %d in %d reservations", name, res, n)
		}
	}
}

func TestSaturatingCounts(t *testing.T) {
	tot := usageTotals{InputTokens: math.MaxInt64 - 1}
	tot.add(usageTotals{InputTokens: 2, OutputTokens: 3})
	if tot.InputTokens != math.MaxInt64 || tot.OutputTokens != 3 {
		t.Fatalf("usageTotals.add: %+v", tot)
	}

	// Through the usage path: a record near the top stays at the top, and
	// the budget reads as spent, not as a negative total.
	e := getTestBackend(t)
	e.writeRoute(t, "r", llmRoute(map[string]any{"token_budget": 100, "max_output_tokens": 10}))
	tok, mint := e.mint(t, "r", nil)
	ctx := context.Background()
	tokenHMAC, err := e.b.hmacToken(ctx, e.storage, tok)
	if err != nil {
		t.Fatal(err)
	}
	te, err := getToken(ctx, e.storage, tokenHMAC)
	if err != nil {
		t.Fatal(err)
	}
	te.InputTokens, te.OutputTokens = math.MaxInt64-5, math.MaxInt64-5
	if err := putToken(ctx, e.storage, tokenHMAC, te); err != nil {
		t.Fatal(err)
	}
	e.b.invalidate(ctx, tokenPrefix+tokenHMAC)
	report(t, e, map[string]any{"accessor": mint.Data["accessor"], "input_tokens": resolve.MaxReportedTokens, "output_tokens": resolve.MaxReportedTokens})
	e.periodic(t)
	rd := e.ok(t, logical.ReadOperation, "tokens/"+mint.Data["accessor"].(string), nil).Data
	if rd["input_tokens"] != int64(math.MaxInt64) || rd["output_tokens"] != int64(math.MaxInt64) || rd["status"] != resolve.ReasonBudgetExhausted {
		t.Fatalf("token read near the top: %v %v %v", rd["input_tokens"], rd["output_tokens"], rd["status"])
	}
	wantDenied(t, e.resolve(t, tok, "POST", "/v1/customers", ""), resolve.ReasonBudgetExhausted)
}
