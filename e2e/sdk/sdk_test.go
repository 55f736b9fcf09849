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
	"sync/atomic"
	"testing"

	"github.com/anthropics/anthropic-sdk-go/v2"
	anthropicoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/openai/openai-go/v3"
	openaioption "github.com/openai/openai-go/v3/option"

	"github.com/phantomvault/phantom/e2e/harness"
)

const (
	openaiKey    = "sk-proj-REALopenaiKEYneverLEAVESvault0123456789"
	anthropicKey = "sk-ant-api03-REALanthropicKEYneverLEAVESvault01234"
)

// clearSDKEnv keeps the SDKs from picking up keys or base URLs from the
// environment: only what the test passes may count.
func clearSDKEnv(t *testing.T) {
	for _, k := range []string{"OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID",
		"ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"} {
		t.Setenv(k, "")
	}
}

// fakeOpenAI speaks enough of the Chat Completions API, accepting only the
// real key; a streamed answer waits for release before its second chunk.
type fakeOpenAI struct {
	requests atomic.Int64
	release  chan struct{}
	leak     atomic.Bool // whether a phantom token ever arrived
}

func (f *fakeOpenAI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.requests.Add(1)
	auth := r.Header.Get("Authorization")
	if strings.Contains(auth, "phm_") {
		f.leak.Store(true)
	}
	if auth != "Bearer "+openaiKey {
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprintf(w, `{"error":{"message":"Incorrect API key provided: %s","type":"invalid_request_error","code":"invalid_api_key"}}`, strings.TrimPrefix(auth, "Bearer "))
		return
	}
	var req struct {
		Stream bool `json:"stream"`
	}
	json.NewDecoder(r.Body).Decode(&req)
	if !req.Stream {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"hello from upstream"}}]}`)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	chunk := func(content, finish string) {
		fin := "null"
		if finish != "" {
			fin = `"` + finish + `"`
		}
		fmt.Fprintf(w, "data: {\"id\":\"chatcmpl-2\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":%q},\"finish_reason\":%s}]}\n\n", content, fin)
		w.(http.Flusher).Flush()
	}
	chunk("hel", "")
	<-f.release // not finished until the client has the first chunk
	chunk("lo", "stop")
	io.WriteString(w, "data: [DONE]\n\n")
}

func TestOpenAISDK(t *testing.T) {
	clearSDKEnv(t)
	v := harness.StartDevVault(t)
	up := &fakeOpenAI{release: make(chan struct{})}
	upstream := harness.StartUpstream(t, up).URL
	v.MustCLI(t, "write", "phantom/routes/openai", "upstream="+upstream, "allowed_paths=/v1/chat/completions,/v1/models",
		"allowed_methods=GET,POST", "credential="+openaiKey, "token_prefix=sk-proj-")
	p := harness.StartProxy(t, v)
	tok, leaseID := v.Mint(t, "openai", "ttl=1h")
	if !strings.HasPrefix(tok, "sk-proj-") {
		t.Fatalf("token %q lacks the route's prefix", tok)
	}
	client := openai.NewClient(openaioption.WithBaseURL(p.URL+"/v1/"), openaioption.WithAPIKey(tok))
	params := openai.ChatCompletionNewParams{Model: openai.ChatModelGPT4o, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}}
	ctx := context.Background()

	resp, err := client.Chat.Completions.New(ctx, params)
	if err != nil || resp.Choices[0].Message.Content != "hello from upstream" {
		t.Fatalf("completion: %v %+v", err, resp)
	}

	stream := client.Chat.Completions.NewStreaming(ctx, params)
	if !stream.Next() {
		t.Fatalf("no first chunk: %v", stream.Err())
	}
	first := stream.Current().Choices[0].Delta.Content
	close(up.release) // the upstream finishes only now
	text := first
	for stream.Next() {
		if len(stream.Current().Choices) > 0 {
			text += stream.Current().Choices[0].Delta.Content
		}
	}
	if err := stream.Err(); err != nil || first != "hel" || text != "hello" {
		t.Fatalf("stream: first %q, all %q, %v", first, text, err)
	}

	// A revoked token is a 401 the SDK does not retry.
	v.MustCLI(t, "lease", "revoke", "-sync", leaseID)
	before := up.requests.Load()
	_, err = client.Chat.Completions.New(ctx, params, openaioption.WithMaxRetries(2))
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 401 {
		t.Fatalf("revoked token: %v", err)
	}
	if up.requests.Load() != before {
		t.Fatal("a revoked token's request reached the upstream")
	}
	if up.leak.Load() {
		t.Fatal("the upstream received a phantom token")
	}
}

func TestOpenAISDKNeverSeesTheKeyInErrors(t *testing.T) {
	clearSDKEnv(t)
	v := harness.StartDevVault(t)
	up := &fakeOpenAI{release: make(chan struct{})}
	upstream := harness.StartUpstream(t, up).URL
	// The route holds a key the upstream rejects; the upstream quotes it back.
	v.MustCLI(t, "write", "phantom/routes/openai", "upstream="+upstream, "allowed_paths=/v1/**",
		"allowed_methods=POST", "credential=sk-proj-STALEkeyTHATtheUPSTREAMrejects0123")
	p := harness.StartProxy(t, v)
	tok, _ := v.Mint(t, "openai")
	client := openai.NewClient(openaioption.WithBaseURL(p.URL+"/v1/"), openaioption.WithAPIKey(tok), openaioption.WithMaxRetries(0))
	_, err := client.Chat.Completions.New(context.Background(), openai.ChatCompletionNewParams{
		Model: openai.ChatModelGPT4o, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}})
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 401 {
		t.Fatalf("want the upstream's 401, got %v", err)
	}
	if strings.Contains(err.Error(), "STALEkey") || !strings.Contains(apiErr.RawJSON(), "Incorrect API key provided: ****") {
		t.Fatalf("the SDK saw the key: %v", err)
	}
}

// fakeAnthropic speaks enough of the Messages API, accepting only the real key
// in x-api-key.
type fakeAnthropic struct {
	mu   sync.Mutex
	seen http.Header
}

func (f *fakeAnthropic) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.seen = r.Header.Clone()
	f.mu.Unlock()
	if r.Header.Get("X-Api-Key") != anthropicKey || r.Header.Get("Anthropic-Version") == "" {
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}`)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	io.WriteString(w, `{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-5-5","content":[{"type":"text","text":"hello from claude"}],"stop_reason":"end_turn","usage":{"input_tokens":1,"output_tokens":3}}`)
}

func TestAnthropicSDK(t *testing.T) {
	clearSDKEnv(t)
	v := harness.StartDevVault(t)
	up := &fakeAnthropic{}
	upstream := harness.StartUpstream(t, up).URL
	v.MustCLI(t, "write", "phantom/routes/anthropic", "upstream="+upstream, "allowed_paths=/v1/messages",
		"allowed_methods=POST", "credential="+anthropicKey, "auth_type=header", "auth_header=x-api-key", "token_prefix=sk-ant-")
	p := harness.StartProxy(t, v)
	tok, _ := v.Mint(t, "anthropic")
	client := anthropic.NewClient(anthropicoption.WithBaseURL(p.URL+"/"), anthropicoption.WithAPIKey(tok))
	msg, err := client.Messages.New(context.Background(), anthropic.MessageNewParams{
		Model:     anthropic.ModelClaudeHaiku5_5,
		MaxTokens: 64,
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))},
	})
	if err != nil || len(msg.Content) != 1 || msg.Content[0].Text != "hello from claude" {
		t.Fatalf("message: %v %+v", err, msg)
	}
	up.mu.Lock()
	defer up.mu.Unlock()
	for name, values := range up.seen {
		for _, val := range values {
			if strings.Contains(val, tok) {
				t.Fatalf("the upstream received the phantom token in %s", name)
			}
		}
	}
}
