package proxy

import (
	"strings"
	"testing"

	"github.com/phantomvault/phantom/internal/resolve"
)

// One request may spend one output cap: under a cap or a budget, every way
// of asking the known endpoints for several completions is refused before
// the upstream sees it, and single completions pass.
func TestOneCompletionPerRequest(t *testing.T) {
	up, seen := recordingUpstream(t)
	p := newTestProxy(t, up.URL, nil)
	budget := func(format string) resolve.Limits {
		return resolve.Limits{UsageFormat: format, MaxOutputTokens: 100, BudgetRemaining: new(int64(1000))}
	}
	capOnly := func(format string) resolve.Limits { return resolve.Limits{UsageFormat: format, MaxOutputTokens: 100} }
	const gen = "/v1beta/models/gemini-2.5-flash:generateContent"
	thirty := `[` + strings.Repeat(`"Say hi.",`, 29) + `"Say hi."]`
	for _, c := range []struct {
		name   string
		limits resolve.Limits
		path   string
		body   string
		status int
		reason string
	}{
		// Several prompts in one legacy completions request.
		{"30 prompts (the finding)", budget("openai"), "/v1/completions", `{"model":"m","prompt":` + thirty + `,"max_tokens":100}`, 403, resolve.ReasonOutputCapExceeded},
		{"2 prompts, cap only", capOnly("openai"), "/v1/completions", `{"model":"m","prompt":["a","b"]}`, 403, resolve.ReasonOutputCapExceeded},
		{"2 token-id prompts", budget("openai"), "/v1/completions", `{"model":"m","prompt":[[1,2],[3,4]]}`, 403, resolve.ReasonOutputCapExceeded},
		{"mixed prompts", budget("openai"), "/v1/completions", `{"model":"m","prompt":["a",[1,2]]}`, 403, resolve.ReasonOutputCapExceeded},
		{"prompts on an Azure path", budget("openai"), "/openai/deployments/d/completions", `{"prompt":["a","b"]}`, 403, resolve.ReasonOutputCapExceeded},
		{"prompts sent to chat", budget("openai"), "/v1/chat/completions", `{"model":"m","prompt":["a","b"]}`, 403, resolve.ReasonOutputCapExceeded},
		{"prompt twice", budget("openai"), "/v1/completions", `{"model":"m","prompt":"a","prompt":["a","b"]}`, 400, resolve.ReasonBadRequest},
		{"prompt escaped twice", budget("openai"), "/v1/completions", `{"model":"m","prompt":"a","pr\u006fmpt":["a","b"]}`, 400, resolve.ReasonBadRequest},
		{"Prompt", budget("openai"), "/v1/completions", `{"model":"m","prompt":"a","Prompt":["a","b"]}`, 400, resolve.ReasonBadRequest},
		// n and best_of, in every spelling the upstream could read.
		{"chat n", budget("openai"), "/v1/chat/completions", `{"model":"m","n":2}`, 403, resolve.ReasonOutputCapExceeded},
		{"completions n", capOnly("openai"), "/v1/completions", `{"model":"m","prompt":"a","n":30}`, 403, resolve.ReasonOutputCapExceeded},
		{"best_of", budget("openai"), "/v1/completions", `{"model":"m","prompt":"a","best_of":3}`, 403, resolve.ReasonOutputCapExceeded},
		{"n as a string", budget("openai"), "/v1/chat/completions", `{"model":"m","n":"2"}`, 400, resolve.ReasonBadRequest},
		{"n as 2.0", budget("openai"), "/v1/chat/completions", `{"model":"m","n":2.0}`, 400, resolve.ReasonBadRequest},
		{"n twice", budget("openai"), "/v1/chat/completions", `{"model":"m","n":1,"n":2}`, 400, resolve.ReasonBadRequest},
		{"N", budget("openai"), "/v1/chat/completions", `{"model":"m","N":2}`, 400, resolve.ReasonBadRequest},
		{"best_of with a long s", budget("openai"), "/v1/completions", `{"model":"m","be\u017ft_of":2}`, 400, resolve.ReasonBadRequest},
		{"n on the Responses API", budget("openai"), "/v1/responses", `{"model":"m","input":"hi","n":2}`, 403, resolve.ReasonOutputCapExceeded},
		{"n on anthropic", budget("anthropic"), "/v1/messages", `{"model":"c","max_tokens":10,"n":2}`, 403, resolve.ReasonOutputCapExceeded},
		// Predicted Outputs: rejected prediction tokens are output no cap bounds.
		{"prediction", budget("openai"), "/v1/chat/completions", `{"model":"m","max_tokens":10,"prediction":{"type":"content","content":"x"}}`, 403, resolve.ReasonOutputCapExceeded},
		{"prediction, cap only", capOnly("openai"), "/v1/chat/completions", `{"model":"m","prediction":{"type":"content","content":"x"}}`, 403, resolve.ReasonOutputCapExceeded},
		// Gemini's candidateCount, camel and snake, in either config spelling.
		{"candidateCount", budget("gemini"), gen, `{"generationConfig":{"candidateCount":2}}`, 403, resolve.ReasonOutputCapExceeded},
		{"candidate_count", budget("gemini"), gen, `{"generationConfig":{"candidate_count":8}}`, 403, resolve.ReasonOutputCapExceeded},
		{"snake config", capOnly("gemini"), gen, `{"generation_config":{"candidate_count":2}}`, 403, resolve.ReasonOutputCapExceeded},
		{"stream", budget("gemini"), "/v1beta/models/g:streamGenerateContent", `{"generationConfig":{"candidateCount":4}}`, 403, resolve.ReasonOutputCapExceeded},
		{"candidateCount as a string", budget("gemini"), gen, `{"generationConfig":{"candidateCount":"2"}}`, 400, resolve.ReasonBadRequest},
		{"both spellings", budget("gemini"), gen, `{"generationConfig":{"candidateCount":1,"candidate_count":2}}`, 400, resolve.ReasonBadRequest},
		{"candidateCount twice", budget("gemini"), gen, `{"generationConfig":{"candidateCount":1,"candidateCount":2}}`, 400, resolve.ReasonBadRequest},
		{"CandidateCount", budget("gemini"), gen, `{"generationConfig":{"CandidateCount":2}}`, 400, resolve.ReasonBadRequest},
		{"GenerationConfig", budget("gemini"), gen, `{"generationConfig":{},"GenerationConfig":{"candidateCount":2}}`, 400, resolve.ReasonBadRequest},
		// Batches: many requests in one, their contents out of sight.
		{"openai batch", budget("openai"), "/v1/batches", `{"input_file_id":"file-1","endpoint":"/v1/chat/completions"}`, 400, resolve.ReasonBadRequest},
		{"anthropic batch", budget("anthropic"), "/v1/messages/batches", `{"requests":[]}`, 400, resolve.ReasonBadRequest},
		{"gemini batch", budget("gemini"), "/v1beta/models/g:batchGenerateContent", `{"batch":{}}`, 400, resolve.ReasonBadRequest},
		{"openai batch, cap only", capOnly("openai"), "/v1/batches", `{"input_file_id":"file-1"}`, 403, resolve.ReasonPathNotAllowed},
		{"anthropic batch, cap only", capOnly("anthropic"), "/v1/messages/batches", `{"requests":[]}`, 403, resolve.ReasonPathNotAllowed},
		{"gemini batch, cap only", capOnly("gemini"), "/v1beta/models/g:batchGenerateContent", `{}`, 403, resolve.ReasonPathNotAllowed},
		// One completion passes.
		{"one prompt", budget("openai"), "/v1/completions", `{"model":"m","prompt":"hi","max_tokens":100}`, 200, ""},
		{"a list of one prompt", budget("openai"), "/v1/completions", `{"model":"m","prompt":["hi"]}`, 200, ""},
		{"token ids", budget("openai"), "/v1/completions", `{"model":"m","prompt":[1,2,3]}`, 200, ""},
		{"one list of token ids", budget("openai"), "/v1/completions", `{"model":"m","prompt":[[1,2,3]]}`, 200, ""},
		{"n 1", budget("openai"), "/v1/chat/completions", `{"model":"m","n":1,"best_of":null}`, 200, ""},
		{"prediction null", budget("openai"), "/v1/chat/completions", `{"model":"m","prediction":null}`, 200, ""},
		{"a Responses prompt template", budget("openai"), "/v1/responses", `{"model":"m","prompt":{"id":"pmpt_1","variables":{"x":["a","b"]}}}`, 200, ""},
		{"candidateCount 1", budget("gemini"), gen, `{"generationConfig":{"candidateCount":1}}`, 200, ""},
		{"anthropic", budget("anthropic"), "/v1/messages", `{"model":"c","max_tokens":100,"messages":[]}`, 200, ""},
		{"no limits", resolve.Limits{UsageFormat: "openai"}, "/v1/completions", `{"model":"m","prompt":["a","b"],"n":2}`, 200, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := c.limits
			p.engine.Edit(p.token, func(g *resolve.Grant) { g.Limits = &l })
			before := seen.count()
			resp, body := p.post(t, c.path, c.body)
			if c.status == 200 {
				if resp.StatusCode != 200 || seen.count() != before+1 {
					t.Fatalf("%d (upstream saw %d): %s", resp.StatusCode, seen.count()-before, body)
				}
				return
			}
			wantError(t, resp, body, c.status, statusType[c.status])
			if !strings.Contains(body, `"reason":"`+c.reason+`"`) {
				t.Fatalf("reason: %s", body)
			}
			if seen.count() != before {
				t.Fatal("a refused request reached the upstream")
			}
			t.Logf("%d %s", resp.StatusCode, body)
		})
	}
}

// The cap is inserted under the key the endpoint reads, unless the body
// gives that key (or, for chat, max_tokens): a number under a key the
// endpoint does not read bounds nothing there.
func TestCapGoesWhereTheEndpointReads(t *testing.T) {
	up, seen := recordingUpstream(t)
	p := newTestProxy(t, up.URL, nil)
	for _, c := range []struct {
		name, format, path, body string
		status                   int
		forwarded                string
	}{
		{"legacy completions given max_completion_tokens", "openai", "/v1/completions", `{"prompt":"a","max_completion_tokens":5}`, 200,
			`{"prompt":"a","max_completion_tokens":5,"max_tokens":100}`},
		{"chat given max_output_tokens", "openai", "/v1/chat/completions", `{"max_output_tokens":5}`, 200,
			`{"max_output_tokens":5,"max_completion_tokens":100}`},
		{"chat given max_tokens", "openai", "/v1/chat/completions", `{"max_tokens":5}`, 200, `{"max_tokens":5}`},
		{"chat given max_completion_tokens", "openai", "/v1/chat/completions", `{"max_completion_tokens":5}`, 200, `{"max_completion_tokens":5}`},
		{"chat given max_tokens 0", "openai", "/v1/chat/completions", `{"max_tokens":0}`, 200, `{"max_tokens":0,"max_completion_tokens":100}`},
		{"responses given max_tokens", "openai", "/v1/responses", `{"input":"a","max_tokens":5}`, 200, `{"input":"a","max_tokens":5,"max_output_tokens":100}`},
		{"responses given max_output_tokens", "openai", "/v1/responses", `{"max_output_tokens":5}`, 200, `{"max_output_tokens":5}`},
		{"anthropic given max_completion_tokens", "anthropic", "/v1/messages", `{"max_completion_tokens":5}`, 200,
			`{"max_completion_tokens":5,"max_tokens":100}`},
		{"legacy completions max_tokens 0", "openai", "/v1/completions", `{"prompt":"a","max_tokens":0}`, 400, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			p.engine.Edit(p.token, func(g *resolve.Grant) { g.Limits = &resolve.Limits{UsageFormat: c.format, MaxOutputTokens: 100} })
			before := seen.count()
			resp, body := p.post(t, c.path, c.body)
			if resp.StatusCode != c.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, c.status, body)
			}
			if c.status != 200 {
				if seen.count() != before {
					t.Fatal("a refused request reached the upstream")
				}
				return
			}
			if got := bodyOf(t, seen.last(t)); got != c.forwarded {
				t.Fatalf("upstream got %s\nwant         %s", got, c.forwarded)
			}
		})
	}
}
