package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	anthropicoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/openai/openai-go/v3"
	openaioption "github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"

	"github.com/phantomvault/phantom/e2e/harness"
)

// Fixed usage the stand-in upstreams report for every call.
const (
	chatIn, chatOut         = 11, 7 // chat completions
	respIn, respOut         = 13, 5 // Responses
	claudeIn, claudeCached  = 9, 2  // input_tokens, cache_read_input_tokens
	claudeOut               = 4
	claudeTotal             = claudeIn + claudeCached + claudeOut
	usageReportIntervalFlag = "-usage-report-interval=100ms"
)

// llmUpstream stands in for OpenAI (chat completions and Responses) and
// Anthropic (messages), JSON and streams, reporting fixed usage. It
// remembers every request body it got.
type llmUpstream struct {
	mu      sync.Mutex
	bodies  []map[string]any
	key     string
	noUsage bool // answer messages without usage
}

func (u *llmUpstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.bodies)
}

func (u *llmUpstream) last(t *testing.T) map[string]any {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.bodies) == 0 {
		t.Fatal("the upstream received nothing")
	}
	return u.bodies[len(u.bodies)-1]
}

func (u *llmUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+u.key && r.Header.Get("X-Api-Key") != u.key {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	u.mu.Lock()
	u.bodies = append(u.bodies, body)
	u.mu.Unlock()
	stream, _ := body["stream"].(bool)
	opts, _ := body["stream_options"].(map[string]any)
	includeUsage, _ := opts["include_usage"].(bool)
	sse := func(lines ...string) {
		w.Header().Set("Content-Type", "text/event-stream")
		for _, l := range lines {
			io.WriteString(w, l+"\n\n")
			w.(http.Flusher).Flush()
		}
	}
	switch r.URL.Path {
	case "/v1/chat/completions":
		if !stream {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}`, chatIn, chatOut, chatIn+chatOut)
			return
		}
		chunk := `data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}`
		last := `data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`
		if includeUsage {
			sse(chunk, last, fmt.Sprintf(`data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d}}`, chatIn, chatOut, chatIn+chatOut), "data: [DONE]")
		} else {
			sse(chunk, last, "data: [DONE]")
		}
	case "/v1/responses":
		usage := fmt.Sprintf(`"usage":{"input_tokens":%d,"input_tokens_details":{"cached_tokens":0},"output_tokens":%d,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":%d}`, respIn, respOut, respIn+respOut)
		resp := `{"id":"resp_1","object":"response","created_at":1,"status":"completed","model":"gpt-4o-mini","output":[{"type":"message","id":"msg_1","status":"completed","role":"assistant","content":[{"type":"output_text","text":"hi","annotations":[]}]}],` + usage + `}`
		if !stream {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, resp)
			return
		}
		sse(`event: response.created`+"\n"+`data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_1","object":"response","created_at":1,"status":"in_progress","model":"gpt-4o-mini","output":[],"usage":null}}`,
			`event: response.output_text.delta`+"\n"+`data: {"type":"response.output_text.delta","sequence_number":1,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"hi"}`,
			`event: response.completed`+"\n"+`data: {"type":"response.completed","sequence_number":2,"response":`+resp+`}`)
	case "/v1/messages":
		if !stream && u.noUsage {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-5-5","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn"}`)
			return
		}
		if !stream {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-5-5","content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn","usage":{"input_tokens":%d,"cache_read_input_tokens":%d,"cache_creation_input_tokens":0,"output_tokens":%d}}`, claudeIn, claudeCached, claudeOut)
			return
		}
		sse(fmt.Sprintf(`event: message_start`+"\n"+`data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-5-5","content":[],"stop_reason":null,"usage":{"input_tokens":%d,"cache_read_input_tokens":%d,"cache_creation_input_tokens":0,"output_tokens":1}}}`, claudeIn, claudeCached),
			`event: content_block_start`+"\n"+`data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`,
			`event: content_block_delta`+"\n"+`data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}`,
			`event: content_block_stop`+"\n"+`data: {"type":"content_block_stop","index":0}`,
			fmt.Sprintf(`event: message_delta`+"\n"+`data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":%d}}`, claudeOut),
			`event: message_stop`+"\n"+`data: {"type":"message_stop"}`)
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

// tokenUsage reads the engine's usage of a token.
func tokenUsage(t *testing.T, v *harness.Vault, accessor string) (in, out, estimated int64) {
	t.Helper()
	d := v.JSON(t, "read", "phantom/tokens/"+accessor)["data"].(map[string]any)
	n := func(k string) int64 { f, _ := d[k].(float64); return int64(f) }
	return n("input_tokens"), n("output_tokens"), n("estimated_responses")
}

// waitUsage polls the engine until the token's usage is want, or fails.
func waitUsage(t *testing.T, v *harness.Vault, accessor string, want [3]int64) {
	t.Helper()
	var got [3]int64
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(150 * time.Millisecond) {
		got[0], got[1], got[2] = tokenUsage(t, v, accessor)
		if got == want {
			return
		}
	}
	t.Fatalf("usage in Vault (input, output, estimated) = %v, want %v", got, want)
}

func openaiClient(p *harness.Proxy, tok string, opts ...openaioption.RequestOption) *openai.Client {
	c := openai.NewClient(append([]openaioption.RequestOption{openaioption.WithBaseURL(p.URL + "/v1/"), openaioption.WithAPIKey(tok)}, opts...)...)
	return &c
}

func anthropicClient(p *harness.Proxy, tok string, opts ...anthropicoption.RequestOption) *anthropic.Client {
	c := anthropic.NewClient(append([]anthropicoption.RequestOption{anthropicoption.WithBaseURL(p.URL + "/"), anthropicoption.WithAPIKey(tok)}, opts...)...)
	return &c
}

var chatParams = openai.ChatCompletionNewParams{Model: "gpt-4o-mini", Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}}

func claudeParams(maxTokens int64) anthropic.MessageNewParams {
	return anthropic.MessageNewParams{Model: anthropic.ModelClaudeHaiku5_5, MaxTokens: maxTokens,
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))}}
}

// Usage is counted exactly as the upstream reported it, JSON and streams,
// OpenAI chat completions and Responses and Anthropic messages; an OpenAI
// stream that did not ask for usage under a budget is made to report it.
func TestLimitsUsageCountedExactly(t *testing.T) {
	clearSDKEnv(t)
	v := harness.StartDevVault(t)
	oai := &llmUpstream{key: openaiKey}
	claude := &llmUpstream{key: anthropicKey}
	v.MustCLI(t, "write", "phantom/routes/openai", "upstream="+harness.StartUpstream(t, oai).URL, "allowed_paths=/v1/**", "allowed_methods=POST",
		"credential="+openaiKey, "usage_format=openai", "token_budget=1000000", "max_output_tokens=4096")
	v.MustCLI(t, "write", "phantom/routes/anthropic", "upstream="+harness.StartUpstream(t, claude).URL, "allowed_paths=/v1/messages", "allowed_methods=POST",
		"credential="+anthropicKey, "auth_type=header", "auth_header=x-api-key", "usage_format=anthropic")
	p := harness.StartProxy(t, v, usageReportIntervalFlag)
	ctx := context.Background()

	tok, acc := v.MintAccessor(t, "openai")
	client := openaiClient(p, tok)
	if _, err := client.Chat.Completions.New(ctx, chatParams); err != nil {
		t.Fatal(err)
	}
	stream := client.Chat.Completions.NewStreaming(ctx, chatParams) // no stream_options: the proxy adds them
	var usage openai.CompletionUsage
	for stream.Next() {
		if c := stream.Current(); c.Usage.TotalTokens > 0 {
			usage = c.Usage
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatal(err)
	}
	if usage.PromptTokens != chatIn || usage.CompletionTokens != chatOut {
		t.Fatalf("the SDK's stream ended without the usage chunk: prompt %d completion %d", usage.PromptTokens, usage.CompletionTokens)
	}
	if opts, _ := oai.last(t)["stream_options"].(map[string]any); opts["include_usage"] != true {
		t.Fatalf("the upstream got no include_usage: %v", oai.last(t))
	}
	respParams := responses.ResponseNewParams{Model: "gpt-4o-mini", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("hi")}}
	if _, err := client.Responses.New(ctx, respParams); err != nil {
		t.Fatal(err)
	}
	rs := client.Responses.NewStreaming(ctx, respParams)
	for rs.Next() {
	}
	if err := rs.Err(); err != nil {
		t.Fatal(err)
	}
	waitUsage(t, v, acc, [3]int64{2*chatIn + 2*respIn, 2*chatOut + 2*respOut, 0})

	tok, acc = v.MintAccessor(t, "anthropic")
	ac := anthropicClient(p, tok)
	if _, err := ac.Messages.New(ctx, claudeParams(64)); err != nil {
		t.Fatal(err)
	}
	ms := ac.Messages.NewStreaming(ctx, claudeParams(64))
	for ms.Next() {
	}
	if err := ms.Err(); err != nil {
		t.Fatal(err)
	}
	waitUsage(t, v, acc, [3]int64{2 * (claudeIn + claudeCached), 2 * claudeOut, 0})
	if !strings.Contains(p.Metrics(t), `phantom_proxy_llm_tokens_total{kind="output",route="anthropic"} 8`) {
		t.Fatalf("metrics lack the route's output tokens:\n%s", harness.Grep(p.Metrics(t), "llm_tokens"))
	}
}

// A budget of B with U tokens a call stops the token after ceil(B/U) calls
// made one after another (each one's usage reported before the next),
// through two proxies in turn: the next is refused as budget_exhausted, a 401 the SDK does not retry, and
// never reaches the upstream.
func TestLimitsBudgetStopsTheToken(t *testing.T) {
	clearSDKEnv(t)
	v := harness.StartDevVault(t)
	claude := &llmUpstream{key: anthropicKey}
	const budget = 40 // ceil(40/15) = 3 calls
	v.MustCLI(t, "write", "phantom/routes/anthropic", "upstream="+harness.StartUpstream(t, claude).URL, "allowed_paths=/v1/messages,/v1/messages/batches",
		"allowed_methods=POST", "credential="+anthropicKey, "auth_type=header", "auth_header=x-api-key", "usage_format=anthropic",
		fmt.Sprintf("token_budget=%d", budget), "max_output_tokens=64")
	p := harness.StartProxy(t, v, usageReportIntervalFlag)
	p2 := harness.StartProxy(t, v, usageReportIntervalFlag)
	tok, acc := v.MintAccessor(t, "anthropic")
	ctx := context.Background()
	// A batch spends outside the request, unmeasured: refused under a budget.
	req, _ := http.NewRequest("POST", p.URL+"/v1/messages/batches", strings.NewReader(`{"requests":[]}`))
	req.Header.Set("X-Api-Key", tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 || claude.count() != 0 {
		t.Fatalf("a batch under a budget: %d, the upstream saw %d", resp.StatusCode, claude.count())
	}
	calls := 0
	for i := range 10 {
		// The two proxies take turns: what one reported, the other's
		// resolve counts.
		ac := anthropicClient(p, tok, anthropicoption.WithMaxRetries(2))
		if i%2 == 1 {
			ac = anthropicClient(p2, tok, anthropicoption.WithMaxRetries(2))
		}
		var err error
		if i%2 == 0 {
			_, err = ac.Messages.New(ctx, claudeParams(64))
		} else {
			s := ac.Messages.NewStreaming(ctx, claudeParams(64))
			for s.Next() {
			}
			err = s.Err()
		}
		if err != nil {
			var apiErr *anthropic.Error
			if !errors.As(err, &apiErr) || apiErr.StatusCode != 401 || !strings.Contains(apiErr.RawJSON(), "budget_exhausted") {
				t.Fatalf("call %d: %v", i+1, err)
			}
			break
		}
		calls++
		waitUsage(t, v, acc, [3]int64{int64(calls) * (claudeIn + claudeCached), int64(calls) * claudeOut, 0})
	}
	if want := (budget + claudeTotal - 1) / claudeTotal; calls != want || claude.count() != want {
		t.Fatalf("%d calls passed and the upstream saw %d, want %d", calls, claude.count(), want)
	}
	// Above the output cap is refused before the upstream.
	tok2, _ := v.MintAccessor(t, "anthropic")
	ac2 := anthropicClient(p, tok2)
	_, err = ac2.Messages.New(ctx, claudeParams(65))
	var apiErr *anthropic.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 403 || !strings.Contains(apiErr.RawJSON(), "max_output_tokens_exceeded") {
		t.Fatalf("above the cap: %v", err)
	}
	if claude.count() != calls {
		t.Fatal("a request above the cap reached the upstream")
	}
}

// A response whose usage cannot be read is never free. Under an output cap
// only, it is charged at the cap, and the request body's length as input.
// Under a budget it is charged the rest of the budget as the engine handed
// it down: the token is spent (fail closed), and its next request is a 401.
func TestLimitsUnreadableUsageIsEstimated(t *testing.T) {
	clearSDKEnv(t)
	v := harness.StartDevVault(t)
	claude := &llmUpstream{key: anthropicKey, noUsage: true}
	up := harness.StartUpstream(t, claude).URL
	route := func(name string, extra ...string) {
		v.MustCLI(t, append([]string{"write", "phantom/routes/" + name, "upstream=" + up, "allowed_paths=/v1/messages", "allowed_methods=POST",
			"credential=" + anthropicKey, "auth_type=header", "auth_header=x-api-key", "usage_format=anthropic", "max_output_tokens=64"}, extra...)...)
	}
	route("capped")
	route("budgeted", "token_budget=100000")
	p := harness.StartProxy(t, v, usageReportIntervalFlag)
	wait := func(acc string, done func(in, out, est int64) bool) (in, out, est int64) {
		for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(150 * time.Millisecond) {
			if in, out, est = tokenUsage(t, v, acc); done(in, out, est) {
				break
			}
		}
		return in, out, est
	}

	tok, acc := v.MintAccessor(t, "capped")
	if _, err := anthropicClient(p, tok).Messages.New(context.Background(), claudeParams(32)); err != nil {
		t.Fatal(err)
	}
	if in, out, est := wait(acc, func(_, _, est int64) bool { return est > 0 }); est != 1 || out != 64 || in < 50 {
		t.Fatalf("under a cap: input %d output %d estimated %d, want the body's length, 64, 1", in, out, est)
	}
	if !strings.Contains(p.Metrics(t), `phantom_proxy_usage_estimated_total{route="capped"} 1`) {
		t.Fatalf("metrics lack the estimate:\n%s", harness.Grep(p.Metrics(t), "estimated"))
	}

	tok, acc = v.MintAccessor(t, "budgeted")
	ac := anthropicClient(p, tok, anthropicoption.WithMaxRetries(0))
	if _, err := ac.Messages.New(context.Background(), claudeParams(32)); err != nil {
		t.Fatal(err)
	}
	if in, out, est := wait(acc, func(in, out, _ int64) bool { return in+out >= 100000 }); est != 1 || in+out != 100000 {
		t.Fatalf("under a budget: input %d output %d estimated %d, want the whole budget charged", in, out, est)
	}
	_, err := ac.Messages.New(context.Background(), claudeParams(32))
	var apiErr *anthropic.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 401 || !strings.Contains(apiErr.RawJSON(), "budget_exhausted") {
		t.Fatalf("after an unreadable answer under a budget: %v", err)
	}
	if claude.count() != 2 {
		t.Fatalf("the upstream saw %d requests, want 2", claude.count())
	}
}
