package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	anthropicoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	openaioption "github.com/openai/openai-go/v3/option"

	"github.com/phantomvault/phantom/e2e/harness"
)

// Over the rate limit the proxy answers 429 with Retry-After and
// Retry-After-Ms; the SDK waits that long and its own retry passes. Two
// proxies against one Vault share the limit.
func TestLimitsRateLimitRetry(t *testing.T) {
	clearSDKEnv(t)
	v := harness.StartDevVault(t)
	oai := &llmUpstream{key: openaiKey}
	v.MustCLI(t, "write", "phantom/routes/openai", "upstream="+harness.StartUpstream(t, oai).URL, "allowed_paths=/v1/**", "allowed_methods=POST",
		"credential="+openaiKey, "rate_limit=1/2s")
	p := harness.StartProxy(t, v)
	p2 := harness.StartProxy(t, v)
	tok, _ := v.MintAccessor(t, "openai")
	ctx := context.Background()
	if _, err := openaiClient(p, tok).Chat.Completions.New(ctx, chatParams); err != nil {
		t.Fatal(err)
	}
	// The other proxy sees the same limit: 429 with the wait.
	req, _ := http.NewRequest("POST", p2.URL+"/v1/chat/completions", strings.NewReader(`{"model":"gpt-4o-mini","messages":[]}`))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	ra, ram := resp.Header.Get("Retry-After"), resp.Header.Get("Retry-After-Ms")
	if ms, err := strconv.Atoi(ram); resp.StatusCode != 429 || ra != "2" || err != nil || ms <= 1000 || ms > 2000 {
		t.Fatalf("second proxy: %d Retry-After %q Retry-After-Ms %q", resp.StatusCode, ra, ram)
	}
	if oai.count() != 1 {
		t.Fatalf("a rate-limited request reached the upstream (%d)", oai.count())
	}
	// The SDK's own retry waits for Retry-After-Ms and then passes.
	var attempts int
	var firstWait time.Duration
	counting := openaioption.WithMiddleware(func(r *http.Request, next openaioption.MiddlewareNext) (*http.Response, error) {
		attempts++
		resp, err := next(r)
		if attempts == 1 && resp != nil {
			ms, _ := strconv.Atoi(resp.Header.Get("Retry-After-Ms"))
			firstWait = time.Duration(ms) * time.Millisecond
		}
		return resp, err
	})
	start := time.Now()
	if _, err := openaiClient(p, tok, counting, openaioption.WithMaxRetries(3)).Chat.Completions.New(ctx, chatParams); err != nil {
		t.Fatalf("the SDK's retry did not pass: %v", err)
	}
	if elapsed := time.Since(start); attempts != 2 || firstWait < time.Second || elapsed < firstWait {
		t.Fatalf("the SDK made %d attempts in %v (first told to wait %v)", attempts, elapsed, firstWait)
	}
	if oai.count() != 2 {
		t.Fatalf("the upstream saw %d requests, want 2", oai.count())
	}
}

// The same through anthropic-sdk-go, streaming: a model outside the list is
// a 403 before the upstream, and a rate-limited request passes on the SDK's
// own retry after the wait the proxy gave.
func TestLimitsAnthropicRateAndModel(t *testing.T) {
	clearSDKEnv(t)
	v := harness.StartDevVault(t)
	claude := &llmUpstream{key: anthropicKey}
	v.MustCLI(t, "write", "phantom/routes/anthropic", "upstream="+harness.StartUpstream(t, claude).URL, "allowed_paths=/v1/messages", "allowed_methods=POST",
		"credential="+anthropicKey, "auth_type=header", "auth_header=x-api-key", "usage_format=anthropic",
		"allowed_models=claude-haiku-*", "rate_limit=1/2s")
	p := harness.StartProxy(t, v)
	tok, _ := v.MintAccessor(t, "anthropic")
	ctx := context.Background()
	params := claudeParams(64)
	params.Model = "claude-opus-4-1"
	s := anthropicClient(p, tok, anthropicoption.WithMaxRetries(0)).Messages.NewStreaming(ctx, params)
	for s.Next() {
	}
	var apiErr *anthropic.Error
	if err := s.Err(); !errors.As(err, &apiErr) || apiErr.StatusCode != 403 || !strings.Contains(apiErr.RawJSON(), "model_not_allowed") {
		t.Fatalf("a model outside the list: %v", err)
	}
	if claude.count() != 0 {
		t.Fatal("a model outside the list reached the upstream")
	}
	// (The refused model spent the rate's one slot: the engine charges the
	// rate at resolve, and the proxy checks the model after.) A call that
	// passes, on the SDK's retry if need be, takes the slot again.
	var attempts int
	var firstWait time.Duration
	counting := anthropicoption.WithMiddleware(func(r *http.Request, next anthropicoption.MiddlewareNext) (*http.Response, error) {
		attempts++
		resp, err := next(r)
		if resp != nil && resp.StatusCode == 429 && firstWait == 0 {
			ms, _ := strconv.Atoi(resp.Header.Get("Retry-After-Ms"))
			firstWait = time.Duration(ms) * time.Millisecond
		}
		return resp, err
	})
	ac := anthropicClient(p, tok, counting, anthropicoption.WithMaxRetries(3))
	if _, err := ac.Messages.New(ctx, claudeParams(64)); err != nil {
		t.Fatal(err)
	}
	attempts, firstWait = 0, 0
	start := time.Now()
	s = ac.Messages.NewStreaming(ctx, claudeParams(64))
	for s.Next() {
	}
	if err := s.Err(); err != nil {
		t.Fatalf("the SDK's retry did not pass: %v", err)
	}
	if elapsed := time.Since(start); attempts != 2 || firstWait < time.Second || elapsed < firstWait {
		t.Fatalf("%d attempts, the proxy asked to wait %v, the stream took %v", attempts, firstWait, elapsed)
	}
	if claude.count() != 2 {
		t.Fatalf("the upstream saw %d requests, want 2", claude.count())
	}
}

// geminiUpstream stands in for Gemini's generateContent, reporting fixed
// usage, and remembers the paths and bodies it got.
type geminiUpstream struct {
	mu     sync.Mutex
	paths  []string
	bodies []map[string]any
}

func (g *geminiUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("X-Goog-Api-Key") != openaiKey {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var body map[string]any
	json.NewDecoder(r.Body).Decode(&body)
	g.mu.Lock()
	g.paths, g.bodies = append(g.paths, r.URL.Path), append(g.bodies, body)
	g.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"candidates":[{"content":{"parts":[{"text":"hi"}],"role":"model"},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":6,"candidatesTokenCount":3,"thoughtsTokenCount":2,"totalTokenCount":11},"modelVersion":"gemini-2.5-flash"}`)
}

// Gemini names the model in the path: the list applies to it, the cap is
// inserted into generationConfig, and usage is read from usageMetadata.
func TestLimitsGeminiModelInPath(t *testing.T) {
	v := harness.StartDevVault(t)
	g := &geminiUpstream{}
	v.MustCLI(t, "write", "phantom/routes/gemini", "upstream="+harness.StartUpstream(t, g).URL, "allowed_paths=/v1beta/models/*", "allowed_methods=POST",
		"credential="+openaiKey, "auth_type=header", "auth_header=x-goog-api-key", "usage_format=gemini",
		"allowed_models=gemini-*-flash", "max_output_tokens=100", "token_budget=100000")
	p := harness.StartProxy(t, v, usageReportIntervalFlag)
	tok, acc := v.MintAccessor(t, "gemini")
	post := func(model string) int {
		req, _ := http.NewRequest("POST", p.URL+"/v1beta/models/"+model+":generateContent", strings.NewReader(`{"contents":[{"parts":[{"text":"hi"}]}]}`))
		req.Header.Set("X-Goog-Api-Key", tok)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := post("gemini-2.5-flash"); got != 200 {
		t.Fatalf("an allowed model: %d", got)
	}
	if got := post("gemini-2.5-pro"); got != 403 {
		t.Fatalf("a model outside the list: %d", got)
	}
	g.mu.Lock()
	n, cfg := len(g.paths), g.bodies[0]["generationConfig"]
	g.mu.Unlock()
	if n != 1 {
		t.Fatalf("the upstream saw %d requests, want 1", n)
	}
	if c, _ := cfg.(map[string]any); c["maxOutputTokens"] != float64(100) {
		t.Fatalf("the upstream got generationConfig %v", cfg)
	}
	waitUsage(t, v, acc, [3]int64{6, 5, 0})
}
