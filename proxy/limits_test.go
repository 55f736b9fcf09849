package proxy

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/proxy/engine/enginetest"
)

// post sends body to the proxy with the test token.
func (p *testProxy) post(t *testing.T, path, body string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest("POST", p.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+p.token)
	req.Header.Set("Content-Type", "application/json")
	return do(t, req)
}

func withLimits(l resolve.Limits) func(*Grant) {
	return func(g *Grant) { g.Limits = &l }
}

func bodyOf(t *testing.T, r *http.Request) string {
	t.Helper()
	b, _ := io.ReadAll(r.Body)
	return string(b)
}

func TestModelAllowList(t *testing.T) {
	up, seen := recordingUpstream(t)
	p := newTestProxy(t, up.URL, withLimits(resolve.Limits{UsageFormat: resolve.UsageOpenAI, AllowedModels: []string{"gpt-4o*"}}))
	resp, body := p.post(t, "/v1/chat/completions", `{"model":"gpt-4o-mini","messages":[]}`)
	if resp.StatusCode != 200 || seen.count() != 1 {
		t.Fatalf("allowed model: %d %s", resp.StatusCode, body)
	}
	if got := bodyOf(t, seen.last(t)); got != `{"model":"gpt-4o-mini","messages":[]}` {
		t.Fatalf("the body was changed: %s", got)
	}
	for name, c := range map[string]struct {
		body   string
		status int
		reason string
	}{
		"outside the list":  {`{"model":"o1","messages":[]}`, 403, resolve.ReasonModelNotAllowed},
		"case":              {`{"model":"GPT-4o","messages":[]}`, 403, resolve.ReasonModelNotAllowed},
		"no model":          {`{"messages":[]}`, 400, resolve.ReasonBadRequest},
		"model not string":  {`{"model":["gpt-4o"]}`, 400, resolve.ReasonBadRequest},
		"model twice":       {`{"model":"gpt-4o","model":"o1"}`, 400, resolve.ReasonBadRequest},
		"escaped twice":     {`{"model":"gpt-4o","mod\u0065l":"o1"}`, 400, resolve.ReasonBadRequest},
		"other case":        {`{"model":"gpt-4o","Model":"o1"}`, 400, resolve.ReasonBadRequest},
		"not JSON":          {`model=gpt-4o`, 400, resolve.ReasonBadRequest},
		"array":             {`[{"model":"gpt-4o"}]`, 400, resolve.ReasonBadRequest},
		"trailing document": {`{"model":"gpt-4o"}{"model":"o1"}`, 400, resolve.ReasonBadRequest},
		"empty":             {``, 400, resolve.ReasonBadRequest},
		"a tool's model":    {`{"model":"gpt-4o","tools":[{"type":"image_generation","model":"gpt-image-1"}]}`, 403, resolve.ReasonModelNotAllowed},
		"a tool's Model":    {`{"model":"gpt-4o","tools":[{"type":"image_generation","Model":"gpt-image-1"}]}`, 403, resolve.ReasonModelNotAllowed},
		"tools not a list":  {`{"model":"gpt-4o","tools":{"model":"gpt-image-1"}}`, 400, resolve.ReasonBadRequest},
	} {
		t.Run(name, func(t *testing.T) {
			before := seen.count()
			resp, body := p.post(t, "/v1/chat/completions", c.body)
			wantError(t, resp, body, c.status, statusType[c.status])
			if !strings.Contains(body, `"reason":"`+c.reason+`"`) {
				t.Fatalf("reason: %s", body)
			}
			if seen.count() != before {
				t.Fatal("a refused request reached the upstream")
			}
		})
	}
	// A tool within the list, or one without a model of its own, passes.
	if resp, body := p.post(t, "/v1/responses", `{"model":"gpt-4o","tools":[{"type":"function","name":"f"},{"type":"image_generation","model":"gpt-4o-mini"}]}`); resp.StatusCode != 200 {
		t.Fatalf("allowed tools: %d %s", resp.StatusCode, body)
	}
	// A GET carries no model: it is neither read nor refused.
	resp, body = get(t, p.url+"/v1/models", map[string]string{"Authorization": "Bearer " + p.token})
	if resp.StatusCode != 200 {
		t.Fatalf("GET under a model rule: %d %s", resp.StatusCode, body)
	}
}

func TestOutputCap(t *testing.T) {
	up, seen := recordingUpstream(t)
	p := newTestProxy(t, up.URL, nil)
	for _, c := range []struct {
		name, format, path, body string
		status                   int
		forwarded                string // the body the upstream must see
	}{
		{"under the cap", "openai", "/v1/chat/completions", `{"model":"m","max_tokens":50}`, 200, `{"model":"m","max_tokens":50}`},
		{"at the cap", "openai", "/v1/chat/completions", `{"model":"m","max_completion_tokens":100}`, 200, `{"model":"m","max_completion_tokens":100}`},
		{"over the cap", "openai", "/v1/chat/completions", `{"model":"m","max_tokens":101}`, 403, ""},
		{"over in another key", "openai", "/v1/chat/completions", `{"model":"m","max_tokens":5,"max_completion_tokens":500}`, 403, ""},
		{"several choices", "openai", "/v1/chat/completions", `{"model":"m","n":2}`, 403, ""},
		{"not an integer", "openai", "/v1/chat/completions", `{"model":"m","max_tokens":1.5}`, 400, ""},
		{"null where the cap goes", "openai", "/v1/chat/completions", `{"model":"m","max_completion_tokens":null}`, 400, ""},
		{"chat without one", "openai", "/v1/chat/completions", `{"model":"m", "messages":[{"role":"user","content":"}"}] }`, 200,
			`{"model":"m", "messages":[{"role":"user","content":"}"}] ,"max_completion_tokens":100}`},
		{"responses without one", "openai", "/v1/responses", `{"model":"m","input":"hi"}`, 200, `{"model":"m","input":"hi","max_output_tokens":100}`},
		{"legacy completions", "openai", "/v1/completions", `{"model":"m"}`, 200, `{"model":"m","max_tokens":100}`},
		{"embeddings untouched", "openai", "/v1/embeddings", `{"model":"m","input":"x"}`, 200, `{"model":"m","input":"x"}`},
		{"empty object", "openai", "/v1/chat/completions", `{}`, 200, `{"max_completion_tokens":100}`},
		{"anthropic without one", "anthropic", "/v1/messages", `{"model":"c","messages":[]}`, 200, `{"model":"c","messages":[],"max_tokens":100}`},
		{"anthropic over", "anthropic", "/v1/messages", `{"model":"c","max_tokens":4096}`, 403, ""},
		{"gemini without config", "gemini", "/v1beta/models/gemini-2.5-flash:generateContent", `{"contents":[]}`, 200,
			`{"contents":[],"generationConfig":{"maxOutputTokens":100}}`},
		{"gemini config without cap", "gemini", "/v1beta/models/g:generateContent", `{"generationConfig":{"temperature":1}}`, 200,
			`{"generationConfig":{"temperature":1,"maxOutputTokens":100}}`},
		{"gemini snake config", "gemini", "/v1beta/models/g:generateContent", `{"generation_config":{}}`, 200,
			`{"generation_config":{"max_output_tokens":100}}`},
		{"gemini over", "gemini", "/v1beta/models/g:streamGenerateContent", `{"generationConfig":{"maxOutputTokens":101}}`, 403, ""},
		{"gemini both spellings", "gemini", "/v1beta/models/g:generateContent", `{"generationConfig":{},"generation_config":{}}`, 400, ""},
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
				if c.status == 403 && !strings.Contains(body, resolve.ReasonOutputCapExceeded) {
					t.Fatalf("reason: %s", body)
				}
				return
			}
			r := seen.last(t)
			got := bodyOf(t, r)
			if got != c.forwarded {
				t.Fatalf("upstream got %s\nwant         %s", got, c.forwarded)
			}
			if r.ContentLength != int64(len(got)) {
				t.Fatalf("Content-Length %d for %d bytes", r.ContentLength, len(got))
			}
			if !json.Valid([]byte(got)) {
				t.Fatalf("not JSON: %s", got)
			}
		})
	}
}

func TestBudgetMakesStreamsMeasurable(t *testing.T) {
	up, seen := recordingUpstream(t)
	p := newTestProxy(t, up.URL, withLimits(resolve.Limits{UsageFormat: resolve.UsageOpenAI, BudgetRemaining: new(int64(1000))}))
	for _, c := range []struct {
		name, body, forwarded string
		status                int
	}{
		{"stream without options", `{"model":"m","stream":true}`, `{"model":"m","stream":true,"stream_options":{"include_usage":true}}`, 200},
		{"options without include_usage", `{"stream":true,"stream_options":{}}`, `{"stream":true,"stream_options":{"include_usage":true}}`, 200},
		{"options with another key", `{"stream":true,"stream_options":{"x":1}}`, `{"stream":true,"stream_options":{"x":1,"include_usage":true}}`, 200},
		{"already on", `{"stream":true,"stream_options":{"include_usage":true}}`, `{"stream":true,"stream_options":{"include_usage":true}}`, 200},
		{"not streaming", `{"model":"m"}`, `{"model":"m"}`, 200},
		{"turned off", `{"stream":true,"stream_options":{"include_usage":false}}`, "", 400},
		{"options null", `{"stream":true,"stream_options":null}`, "", 400},
		{"include_usage twice", `{"stream":true,"stream_options":{"include_usage":true,"include_usage":false}}`, "", 400},
		{"stream not a bool", `{"stream":"yes"}`, "", 400},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := seen.count()
			resp, body := p.post(t, "/v1/chat/completions", c.body)
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
				t.Fatalf("upstream got %s, want %s", got, c.forwarded)
			}
		})
	}
}

// A model rule on a Gemini route reads the model from the path alone
// (metering's TestGeminiModelFromPath): the body is not read, and a path
// or query naming the model elsewhere is refused before the upstream.
func TestGeminiPathModelRule(t *testing.T) {
	up, seen := recordingUpstream(t)
	p := newTestProxy(t, up.URL, withLimits(resolve.Limits{UsageFormat: resolve.UsageGemini, AllowedModels: []string{"gemini-*-flash"}}))
	if resp, body := p.post(t, "/v1beta/models/gemini-2.5-flash:generateContent", `not even JSON: no body is read for a path model`); resp.StatusCode != 200 {
		t.Fatalf("allowed: %d %s", resp.StatusCode, body)
	}
	for path, status := range map[string]int{
		"/v1beta/models/gemini-2.5-pro:generateContent":                          403,
		"/v1beta/tunedModels/gemini-x-flash:generateContent":                     403,
		"/v1beta/cachedContents":                                                 400,
		"/v1beta/models/gemini-2.5-pro:generateContent/models/gemini-2.0-flash":  400,
		"/v1beta/models/gemini-2.5-pro/models/gemini-2.0-flash:generateContent":  400,
		"/v1beta/models/gemini-2.0-flash@gemini-2.5-pro:generateContent":         400,
		"/v1beta/models/gemini-2.0-flash:generateContent?model=gemini-2.5-pro":   400,
		"/v1beta/models/gemini-2.0-flash:generateContent?alt=sse&Model=gemini-x": 400,
	} {
		before := seen.count()
		resp, body := p.post(t, path, `{}`)
		if resp.StatusCode != status || seen.count() != before {
			t.Errorf("%s: %d %s (forwarded: %v)", path, resp.StatusCode, body, seen.count() != before)
		}
	}
}

func TestRateLimitedHasRetryAfter(t *testing.T) {
	for ms, want := range map[int64][2]string{1500: {"2", "1500"}, 1: {"1", "1"}, 2000: {"2", "2000"}, 0: {"1", ""}} {
		tok, limited := mintToken(t), enginetest.New()
		limited.Answer(tok, resolve.Answer{Reason: resolve.ReasonRateLimited, Route: "r", Accessor: "pha_x", RetryAfterMS: ms})
		srv, err := NewServer(Config{VaultAddr: "http://unused", AuditFile: t.TempDir() + "/audit.log"},
			limited, testMetrics(t), hclog.NewNullLogger())
		if err != nil {
			t.Fatal(err)
		}
		ts := httptest.NewServer(srv)
		resp, body := get(t, ts.URL+"/v1/x", map[string]string{"Authorization": "Bearer " + tok})
		ts.Close()
		srv.Close()
		wantError(t, resp, body, 429, errRateLimited)
		if got := [2]string{resp.Header.Get("Retry-After"), resp.Header.Get("Retry-After-Ms")}; got != want {
			t.Errorf("%d ms: headers %q, want %q", ms, got, want)
		}
	}
}

// total is what sink took for accessor: input, output and estimated tokens.
func total(sink *enginetest.Engine, accessor string) (in, out, est int64) {
	r := sink.Reported(accessor)
	return r.InputTokens, r.OutputTokens, r.Estimated
}

// Under a budget, what cannot be measured is refused: batches. (Upgrades
// are refused for every token.)
func TestBudgetRefusesUnmeasurable(t *testing.T) {
	up, seen := recordingUpstream(t)
	p := newTestProxy(t, up.URL, withLimits(resolve.Limits{UsageFormat: resolve.UsageAnthropic, BudgetRemaining: new(int64(10))}))
	for _, path := range []string{"/v1/messages/batches", "/v1/batches"} {
		resp, body := p.post(t, path, `{"requests":[]}`)
		if resp.StatusCode != 400 || !strings.Contains(body, "batch") {
			t.Fatalf("%s: %d %s", path, resp.StatusCode, body)
		}
	}
	if seen.count() != 0 {
		t.Fatal("an unmeasurable request reached the upstream")
	}
	// Reading a batch's results is not spending.
	if resp, body := get(t, p.url+"/v1/messages/batches/b1", map[string]string{"Authorization": "Bearer " + p.token}); resp.StatusCode != 200 {
		t.Fatalf("GET a batch: %d %s", resp.StatusCode, body)
	}
}
