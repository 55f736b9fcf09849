package sdk

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/phantomvault/phantom/e2e/harness"
)

// Budgets with reservations: the engine reserves each budgeted request's
// output cap at resolve and releases it when the proxy settles the request
// in a usage report. These tests hold the proxy to its side: every request
// settled once and promptly, usage read even when the agent hangs up, and
// only endpoints it can cap and meter.

const (
	settleCap  = 50                   // the routes' max_output_tokens
	settleIn   = 10                   // the stand-in's prompt_tokens
	settleOut  = 15                   // its completion_tokens
	settleUsed = settleIn + settleOut // what each call spends: half the cap it reserves
)

// chatStandIn answers chat completions with fixed usage (settleUsed), after
// delay, and counts what it was asked.
type chatStandIn struct {
	delay time.Duration
	calls atomic.Int64
}

func (c *chatStandIn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+openaiKey {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	io.Copy(io.Discard, r.Body)
	c.calls.Add(1)
	time.Sleep(c.delay)
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}`,
		settleIn, settleOut, settleUsed)
}

// budgetRoute writes an OpenAI route to up with a budget and the cap.
func budgetRoute(t *testing.T, v *harness.Vault, up string, budget int) {
	t.Helper()
	v.MustCLI(t, "write", "phantom/routes/openai", "upstream="+up, "allowed_paths=/v1/**", "allowed_methods=GET,POST,PUT",
		"credential="+openaiKey, "usage_format=openai", fmt.Sprintf("token_budget=%d", budget), fmt.Sprintf("max_output_tokens=%d", settleCap))
}

// chat posts one chat completion with client and returns the status, the
// refusal's reason, and the wait it asked for.
func chat(t *testing.T, client *http.Client, base, tok, path string) (status int, reason string, wait time.Duration) {
	t.Helper()
	req, _ := http.NewRequest("POST", base+path, strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		t.Error(err)
		return 0, "", 0
	}
	defer resp.Body.Close()
	var e struct {
		Error struct {
			Reason string `json:"reason"`
		} `json:"error"`
	}
	json.NewDecoder(resp.Body).Decode(&e)
	ms, _ := strconv.Atoi(resp.Header.Get("Retry-After-Ms"))
	return resp.StatusCode, e.Error.Reason, time.Duration(ms) * time.Millisecond
}

// spent is what the engine has charged a token.
func spent(t *testing.T, v *harness.Vault, acc string) int64 {
	in, out, _ := tokenUsage(t, v, acc)
	return in + out
}

// Requests made one after another on one connection, each at once after
// the last (no waiting for usage to reach Vault), stop at the budget: a
// budget of B with every call spending U passes exactly ceil(B/U) calls,
// then the token is refused with budget_exhausted (401). Each call reserves
// the cap C = 2U: were calls never settled, their reservations would hold
// the budget after two calls and the token would stay budget_pending (429).
// The proxy reports each settlement at once and, when the engine finds the
// token pending while this proxy's settlement of it is on its way, asks
// again once it is in: a sequential agent does not wait out a 429.
func TestLimitsBudgetSequentialStopsAtTheBound(t *testing.T) {
	v := harness.StartDevVault(t)
	standIn := &chatStandIn{}
	const budget = 12*settleUsed - 5 // ceil(B/U) = 12
	budgetRoute(t, v, harness.StartUpstream(t, standIn).URL, budget)
	p := harness.StartProxy(t, v) // the default 1 s report interval: settlements must not wait for it
	tok, acc := v.MintAccessor(t, "openai")
	client := &http.Client{Transport: &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1}}
	t.Cleanup(client.CloseIdleConnections)

	passed, pending := 0, 0
	start := time.Now()
	for i := 0; ; i++ {
		if i > 50 || time.Since(start) > 30*time.Second {
			t.Fatalf("after %d requests (%d passed, %d budget_pending) the token was never exhausted", i, passed, pending)
		}
		status, reason, wait := chat(t, client, p.URL, tok, "/v1/chat/completions")
		switch {
		case status == 200:
			passed++
		case status == 429 && reason == "budget_pending":
			pending++
			time.Sleep(max(wait, 50*time.Millisecond))
		case status == 401 && reason == "budget_exhausted":
			if want := (budget + settleUsed - 1) / settleUsed; passed != want || standIn.calls.Load() != int64(want) {
				t.Fatalf("%d calls passed, the upstream saw %d; want %d", passed, standIn.calls.Load(), want)
			}
			if got := spent(t, v, acc); got != int64(passed*settleUsed) {
				t.Fatalf("Vault charged %d, want %d", got, passed*settleUsed)
			}
			if pending > 1 { // one, if a report call was slow
				t.Fatalf("a sequential agent was told budget_pending %d times", pending)
			}
			t.Logf("%d passed, %d budget_pending, then budget_exhausted, in %v", passed, pending, time.Since(start))
			return
		default:
			t.Fatalf("request %d: %d %s", i+1, status, reason)
		}
	}
}

// Sixteen agents at once on one token cannot spend more than the budget and
// one call: each admitted request holds its cap (which bounds its spend)
// until settled, and a request is admitted only while spent + held < B, so
// at most ceil(B/U) calls of U each pass, and the token spends less than
// B + U (the documented bound is B - 1 + C plus the inputs in flight).
func TestLimitsBudgetParallelBound(t *testing.T) {
	v := harness.StartDevVault(t)
	standIn := &chatStandIn{delay: 100 * time.Millisecond}
	const budget = 10*settleUsed - 5 // ceil(B/U) = 10
	budgetRoute(t, v, harness.StartUpstream(t, standIn).URL, budget)
	p := harness.StartProxy(t, v)
	tok, acc := v.MintAccessor(t, "openai")

	var passed, pending atomic.Int64
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Transport: &http.Transport{}}
			defer client.CloseIdleConnections()
			for ctx.Err() == nil {
				status, reason, wait := chat(t, client, p.URL, tok, "/v1/chat/completions")
				switch {
				case status == 200:
					passed.Add(1)
				case status == 429 && reason == "budget_pending":
					pending.Add(1)
					time.Sleep(max(wait/4, 20*time.Millisecond))
				case status == 401 && reason == "budget_exhausted":
					return
				default:
					t.Errorf("%d %s", status, reason)
					return
				}
			}
			t.Error("the token was never exhausted")
		}()
	}
	wg.Wait()
	bound := int64((budget + settleUsed - 1) / settleUsed)
	if passed.Load() > bound || standIn.calls.Load() != passed.Load() {
		t.Fatalf("%d calls passed (the upstream saw %d), the bound is %d", passed.Load(), standIn.calls.Load(), bound)
	}
	if got := spent(t, v, acc); got != passed.Load()*settleUsed || got >= budget+settleUsed {
		t.Fatalf("Vault charged %d for %d calls; the bound is below %d", got, passed.Load(), budget+settleUsed)
	}
	if pending.Load() == 0 {
		t.Fatal("sixteen agents at once were never told budget_pending")
	}
	t.Logf("%d passed, %d budget_pending", passed.Load(), pending.Load())
}

// hangUpStandIn streams a chat completion: one chunk, then, once released,
// more than any socket buffers, then the usage chunk; done is closed once
// all of it was written.
type hangUpStandIn struct {
	release, done chan struct{}
}

func (h *hangUpStandIn) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	w.Header().Set("Content-Type", "text/event-stream")
	io.WriteString(w, `data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"first"}}]}`+"\n\n")
	w.(http.Flusher).Flush()
	<-h.release
	filler := `data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"` + strings.Repeat("x", 8<<10) + `"}}]}` + "\n\n"
	for range 512 { // 4 MiB
		if _, err := io.WriteString(w, filler); err != nil {
			return
		}
		w.(http.Flusher).Flush()
	}
	fmt.Fprintf(w, `data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}`+"\n\ndata: [DONE]\n\n", 1234, 45, 1279)
	w.(http.Flusher).Flush()
	close(h.done)
}

// An agent that hangs up mid-stream, before the usage chunk, is still
// charged the usage the upstream reports at the stream's end: the proxy
// reads the rest of the stream itself.
func TestLimitsHangUpStillCharged(t *testing.T) {
	v := harness.StartDevVault(t)
	standIn := &hangUpStandIn{release: make(chan struct{}), done: make(chan struct{})}
	budgetRoute(t, v, harness.StartUpstream(t, standIn).URL, 1_000_000)
	p := harness.StartProxy(t, v, usageReportIntervalFlag)
	tok, acc := v.MintAccessor(t, "openai")

	conn, err := net.Dial("tcp", strings.TrimPrefix(p.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	body := `{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`
	fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: phantom\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", tok, len(body), body)
	br := bufio.NewReader(conn)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("before the first chunk: %v", err)
		}
		if strings.Contains(line, `"first"`) {
			break
		}
	}
	conn.Close() // the agent goes away after the first chunk
	time.Sleep(100 * time.Millisecond)
	close(standIn.release)
	select {
	case <-standIn.done:
	case <-time.After(15 * time.Second):
		t.Fatal("the proxy stopped reading the stream when the agent went away")
	}
	waitUsage(t, v, acc, [3]int64{1234, 45, 0})
}

// Under a cap, a request to an endpoint the proxy cannot cap and meter (a
// trailing slash, an unknown API) is refused before the upstream; reading
// (no body) stays allowed.
func TestLimitsUnknownEndpointRefused(t *testing.T) {
	v := harness.StartDevVault(t)
	oai := &llmUpstream{key: openaiKey}
	v.MustCLI(t, "write", "phantom/routes/openai", "upstream="+harness.StartUpstream(t, oai).URL, "allowed_paths=/v1/**", "allowed_methods=GET,POST,PUT",
		"credential="+openaiKey, "usage_format=openai", "max_output_tokens=50")
	p := harness.StartProxy(t, v)
	tok, _ := v.MintAccessor(t, "openai")
	for _, path := range []string{"/v1/chat/completions/", "/v1/images/generations", "/v1/batches", "/v1/chat/completions/x"} {
		status, reason, _ := chat(t, http.DefaultClient, p.URL, tok, path)
		if status != 403 || reason != "path_not_allowed" {
			t.Errorf("%s: %d %s", path, status, reason)
		}
	}
	if oai.count() != 0 {
		t.Fatalf("the upstream saw %d refused requests", oai.count())
	}
	if status, reason, _ := chat(t, http.DefaultClient, p.URL, tok, "/v1/chat/completions"); status != 200 {
		t.Fatalf("the known endpoint: %d %s", status, reason)
	}
	if got := oai.last(t)["max_completion_tokens"]; got != float64(50) {
		t.Fatalf("the upstream got max_completion_tokens %v", got)
	}
	req, _ := http.NewRequest("GET", p.URL+"/v1/models", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == 403 {
		t.Fatal("a GET without a body was refused")
	}
}
