package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phantomvault/phantom/e2e/harness"
)

// TestLimitsOneCompletionPerRequest drives the rule that one request spends
// at most one output cap through a real Vault, the real plugin and the real
// proxy: on routes with an output cap (and a budget), every way one request
// asks the upstream for several completions (a list of prompts, n, best_of,
// a prediction, Gemini's candidateCount, in any spelling the upstream could
// read) and every batch is refused before the upstream sees it, single
// completions pass, and the engine is charged what one completion spends.
func TestLimitsOneCompletionPerRequest(t *testing.T) {
	v := harness.StartDevVault(t)
	up := startCompletionsUpstream(t)
	p := harness.StartProxy(t, v)
	route := func(name, format string, extra ...string) {
		usageRoute(t, v, name, up.URL, "/v1/**,/v1beta/**,/openai/**", format, append([]string{"max_output_tokens=100"}, extra...)...)
	}
	route("oai", "openai", "token_budget=1000") // the finding's route
	route("oaicap", "openai")                   // a cap, no budget
	route("ant", "anthropic", "token_budget=1000")
	route("gem", "gemini", "token_budget=1000")
	post := func(tok, path, body string) (int, string) {
		t.Helper()
		code, b, _ := p.Do(t, "POST", path, tok, body, harness.JSONBody)
		return code, b
	}

	thirty := `[` + strings.Repeat(`"Say hi.",`, 29) + `"Say hi."]`
	const gen = "/v1beta/models/gemini-2.5-flash:generateContent"
	for _, c := range []struct {
		name, route, path, body string
		status                  int
		reason                  string // of a refusal
	}{
		{"30 prompts (the finding)", "oai", "/v1/completions", `{"model":"gpt-3.5-turbo-instruct","prompt":` + thirty + `,"max_tokens":100}`, 403, "max_output_tokens_exceeded"},
		{"two token-id prompts", "oai", "/v1/completions", `{"model":"m","prompt":[[1,2],[3,4]],"max_tokens":100}`, 403, "max_output_tokens_exceeded"},
		{"two prompts under a cap only", "oaicap", "/v1/completions", `{"model":"m","prompt":["a","b"]}`, 403, "max_output_tokens_exceeded"},
		{"two prompts to an Azure path", "oai", "/openai/deployments/d/completions", `{"prompt":["a","b"]}`, 403, "max_output_tokens_exceeded"},
		{"prompt twice, the list last", "oai", "/v1/completions", `{"model":"m","prompt":"a","prompt":["a","b"]}`, 400, "bad_request"},
		{"Prompt in another case", "oai", "/v1/completions", `{"model":"m","prompt":"a","Prompt":["a","b"]}`, 400, "bad_request"},
		{"chat n", "oai", "/v1/chat/completions", `{"model":"m","messages":[],"n":30}`, 403, "max_output_tokens_exceeded"},
		{"best_of", "oai", "/v1/completions", `{"model":"m","prompt":"a","best_of":5}`, 403, "max_output_tokens_exceeded"},
		{"n twice", "oai", "/v1/chat/completions", `{"model":"m","n":1,"n":8}`, 400, "bad_request"},
		{"prediction", "oai", "/v1/chat/completions", `{"model":"m","max_tokens":10,"prediction":{"type":"content","content":"x"}}`, 403, "max_output_tokens_exceeded"},
		{"candidateCount", "gem", gen, `{"contents":[],"generationConfig":{"candidateCount":8}}`, 403, "max_output_tokens_exceeded"},
		{"candidate_count", "gem", gen, `{"generationConfig":{"candidate_count":8}}`, 403, "max_output_tokens_exceeded"},
		{"generation_config", "gem", gen, `{"generation_config":{"candidate_count":8}}`, 403, "max_output_tokens_exceeded"},
		{"candidateCount as a string", "gem", gen, `{"generationConfig":{"candidateCount":"8"}}`, 400, "bad_request"},
		{"candidateCount twice", "gem", gen, `{"generationConfig":{"candidateCount":1,"candidateCount":8}}`, 400, "bad_request"},
		{"OpenAI batch", "oai", "/v1/batches", `{"input_file_id":"file-1","endpoint":"/v1/completions","completion_window":"24h"}`, 400, "bad_request"},
		{"OpenAI batch under a cap only", "oaicap", "/v1/batches", `{"input_file_id":"file-1"}`, 403, "path_not_allowed"},
		{"Anthropic message batch", "ant", "/v1/messages/batches", `{"requests":[{"custom_id":"a","params":{"max_tokens":100}}]}`, 400, "bad_request"},
		{"Gemini batch", "gem", "/v1beta/models/gemini-2.5-flash:batchGenerateContent", `{"batch":{}}`, 400, "bad_request"},

		{"one prompt", "oai", "/v1/completions", `{"model":"m","prompt":"Say hi.","max_tokens":100}`, 200, ""},
		{"a list of one prompt", "oai", "/v1/completions", `{"model":"m","prompt":["Say hi."]}`, 200, ""},
		{"one prompt of token ids", "oai", "/v1/completions", `{"model":"m","prompt":[1,2,3]}`, 200, ""},
		{"a list of one token-id prompt", "oaicap", "/v1/completions", `{"model":"m","prompt":[[1,2,3]]}`, 200, ""},
		{"chat n 1", "oai", "/v1/chat/completions", `{"model":"m","messages":[],"n":1}`, 200, ""},
		{"responses", "oai", "/v1/responses", `{"model":"m","input":"hi"}`, 200, ""},
		{"candidateCount 1", "gem", gen, `{"generationConfig":{"candidateCount":1}}`, 200, ""},
		{"anthropic message", "ant", "/v1/messages", `{"model":"c","max_tokens":100,"messages":[]}`, 200, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			tok, _ := v.MintAccessor(t, c.route) // a fresh token: no case holds another's budget
			before := up.count()
			code, body := post(tok, c.path, c.body)
			if code != c.status {
				t.Fatalf("%d, want %d: %s", code, c.status, body)
			}
			if c.status != 200 {
				if up.count() != before {
					t.Fatalf("a refused request reached the upstream: %d %s", code, body)
				}
				if !strings.Contains(body, `"reason":"`+c.reason+`"`) {
					t.Fatalf("reason, want %s: %s", c.reason, body)
				}
				t.Logf("%d %.200s", code, body)
				return
			}
			if up.count() != before+1 {
				t.Fatalf("the upstream saw %d requests", up.count()-before)
			}
		})
	}
	// Whatever passed asked the upstream for one completion of at most the cap.
	for _, r := range up.all() {
		if r.completions != 1 || r.output > 100 {
			t.Errorf("the upstream was asked for %d completions, %d output tokens, at %s", r.completions, r.output, r.path)
		}
	}

	// The finding, charged: on a budget of 1000 with a cap of 100, the 30
	// prompts would have cost 3000 output tokens; refused, they cost
	// nothing, and one prompt after them costs one cap.
	t.Run("charged one cap", func(t *testing.T) {
		tok, accessor := v.MintAccessor(t, "oai")
		if code, body := post(tok, "/v1/completions", `{"model":"m","prompt":`+thirty+`,"max_tokens":100}`); code != 403 {
			t.Fatalf("30 prompts: %d %s", code, body)
		}
		if code, body := post(tok, "/v1/completions", `{"model":"m","prompt":"Say hi.","max_tokens":100}`); code != 200 {
			t.Fatalf("one prompt after them: %d %s", code, body)
		}
		var info map[string]any
		for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			info = v.JSON(t, "read", "phantom/tokens/"+accessor)["data"].(map[string]any)
			if info["output_tokens"] != float64(0) || time.Now().After(deadline) {
				break
			}
		}
		if info["output_tokens"] != float64(100) || info["input_tokens"] != float64(10) || info["budget_remaining"] != float64(890) {
			t.Fatalf("tokens/<accessor>: input %v output %v remaining %v, want 10, 100, 890",
				info["input_tokens"], info["output_tokens"], info["budget_remaining"])
		}
	})
}

// completionsUpstream answers like an LLM API that spends what it was asked
// for: each completion its max tokens, one completion per prompt and per n
// (best_of, candidateCount), with the usage in each API's shape.
type completionsUpstream struct {
	*harness.Upstream
	mu       sync.Mutex
	received []completionsRequest
}

type completionsRequest struct {
	path        string
	completions int64
	output      int64
}

func (u *completionsUpstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.received)
}

func (u *completionsUpstream) all() []completionsRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]completionsRequest(nil), u.received...)
}

func startCompletionsUpstream(t *testing.T) *completionsUpstream {
	t.Helper()
	u := &completionsUpstream{}
	u.Upstream = harness.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+realKey {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		var body map[string]any
		json.NewDecoder(r.Body).Decode(&body)
		num := func(m map[string]any, keys ...string) int64 {
			var n int64
			for _, k := range keys {
				if f, ok := m[k].(float64); ok {
					n = max(n, int64(f))
				}
			}
			return n
		}
		completions := max(num(body, "n", "best_of"), 1)
		if list, ok := body["prompt"].([]any); ok {
			ids := true
			for _, e := range list {
				if _, isNum := e.(float64); !isNum {
					ids = false
				}
			}
			if !ids {
				completions *= int64(len(list))
			}
		}
		each := num(body, "max_tokens", "max_completion_tokens", "max_output_tokens")
		cfg, _ := body["generationConfig"].(map[string]any)
		if snake, ok := body["generation_config"].(map[string]any); ok {
			cfg = snake
		}
		if cfg != nil {
			completions = max(num(cfg, "candidateCount", "candidate_count"), 1)
			each = num(cfg, "maxOutputTokens", "max_output_tokens")
		}
		out := completions * each
		u.mu.Lock()
		u.received = append(u.received, completionsRequest{path: r.URL.Path, completions: completions, output: out})
		u.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch {
		case strings.Contains(r.URL.Path, ":"): // Gemini
			fmt.Fprintf(w, `{"candidates":[],"usageMetadata":{"promptTokenCount":10,"candidatesTokenCount":%d}}`, out)
		case strings.HasSuffix(r.URL.Path, "/messages"), strings.HasSuffix(r.URL.Path, "/responses"):
			fmt.Fprintf(w, `{"usage":{"input_tokens":10,"output_tokens":%d}}`, out)
		default:
			fmt.Fprintf(w, `{"choices":[],"usage":{"prompt_tokens":%d,"completion_tokens":%d}}`, 10*max(completions, 1), out)
		}
	}))
	return u
}
