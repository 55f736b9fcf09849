package e2e

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phantomvault/phantom/e2e/harness"
)

// TestUsageBehindDeepJSON: an agent controls JSON that comes before the
// usage in real LLM answers (the Responses API echoes the request's tools
// and their JSON Schemas, Anthropic's tool_use.input and Gemini's
// functionCall.args are objects the model writes), nested as deep as it
// likes and full of look-alike usage objects. Through a real Vault, the
// real plugin and the real proxy, on routes that only count usage
// (usage_format, no budget, no cap), the engine records the usage the API
// reported, for every API shape, in a body and in a stream. An answer whose
// usage cannot be read is charged nothing there, and says so: the proxy's
// phantom_proxy_usage_unreadable_total and its audit record
// ("usage":"unreadable"), never a silent zero.
func TestUsageBehindDeepJSON(t *testing.T) {
	v := harness.StartDevVault(t)
	up := startDeepUsageUpstream(t)
	p := harness.StartProxy(t, v)
	for _, format := range []string{"openai", "anthropic", "gemini"} {
		usageRoute(t, v, "deep-"+format, up.URL, "/v1/**,/v1beta/**", format)
	}

	for _, c := range deepE2ECases {
		t.Run(c.name, func(t *testing.T) {
			tok, accessor := v.MintAccessor(t, "deep-"+c.format)
			id := deepPost(t, p, tok, c)
			want := map[string]any{"input_tokens": float64(c.in), "output_tokens": float64(c.out), "estimated_responses": float64(0)}
			engineUsage(t, v, accessor, want)
			if got := auditUsage(t, p, id); got != "measured" {
				t.Fatalf("audit record %s: usage %q, want \"measured\"", id, got)
			}
		})
	}
	if got := harness.Grep(p.Metrics(t), "phantom_proxy_usage_unreadable_total{"); got != "" {
		t.Fatalf("answers whose usage was read counted as unreadable:\n%s", got)
	}

	t.Run("unreadable usage is recorded, never a silent zero", func(t *testing.T) {
		for _, c := range []struct {
			name, reason string
		}{{"truncated", "malformed"}, {"missing", "missing"}} {
			tok, accessor := v.MintAccessor(t, "deep-openai")
			id := deepPost(t, p, tok, deepE2ECase{name: c.name, format: "openai", path: "/v1/chat/completions?case=" + c.name})
			if got := auditUsage(t, p, id); got != "unreadable" {
				t.Fatalf("%s: audit record %s: usage %q, want \"unreadable\"", c.name, id, got)
			}
			line := fmt.Sprintf(`phantom_proxy_usage_unreadable_total{reason=%q,route="deep-openai"} 1`, c.reason)
			if text := p.Metrics(t); !strings.Contains(text, line) {
				t.Fatalf("%s: the proxy's metrics lack %s:\n%s", c.name, line, harness.Grep(text, "usage_unreadable"))
			}
			// Nothing was charged: the route only counts, and nothing was read.
			time.Sleep(1500 * time.Millisecond) // past a report interval
			engineUsage(t, v, accessor, map[string]any{"input_tokens": float64(0), "output_tokens": float64(0)})
		}
		if n := metric(t, p, "phantom_proxy_usage_unreadable_total"); n != 2 {
			t.Fatalf("phantom_proxy_usage_unreadable_total is %v, want 2", n)
		}
	})
}

// deepE2ECase is one answer shape: the route's format, the path (whose
// case query tells the upstream what to answer), the usage in it.
type deepE2ECase struct {
	name, format, path string
	in, out            int64
}

var deepE2ECases = []deepE2ECase{
	{"openai chat", "openai", "/v1/chat/completions?case=chat", 12, 34},
	{"openai chat stream", "openai", "/v1/chat/completions?case=chat-sse", 7, 9},
	{"openai responses", "openai", "/v1/responses?case=responses", 50000, 10},
	{"openai responses stream", "openai", "/v1/responses?case=responses-sse", 30, 40},
	{"anthropic", "anthropic", "/v1/messages?case=anthropic", 5017, 20},
	{"anthropic stream", "anthropic", "/v1/messages?case=anthropic-sse", 25, 16},
	{"gemini", "gemini", "/v1beta/models/gemini-2.0-flash:generateContent?case=gemini", 11, 25},
	{"gemini stream", "gemini", "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse&case=gemini-sse", 11, 9},
	{"gemini json array stream", "gemini", "/v1beta/models/gemini-2.0-flash:streamGenerateContent?case=gemini-array", 4, 6},
}

// deepAgentJSON is a value nested depth levels, objects and arrays in turn,
// with look-alikes of every usage object (and of the structure around one)
// at each object level, and strings full of braces and escaped quotes.
func deepAgentJSON(depth int) string {
	const decoys = `"usage":{"prompt_tokens":1,"completion_tokens":1,"input_tokens":1,"output_tokens":1},` +
		`"usageMetadata":{"promptTokenCount":1,"candidatesTokenCount":1},` +
		`"response":{"usage":{"input_tokens":1,"output_tokens":1}},"message":{"usage":{"input_tokens":1,"output_tokens":1}},` +
		`"s":"}]\"{[\\","\"usage\"":"\"usage\":{\"prompt_tokens\":1}}}}",`
	var b strings.Builder
	for i := range depth {
		if i%2 == 0 {
			b.WriteString(`{` + decoys + `"k":`)
		} else {
			b.WriteString(`[{"usage":{"prompt_tokens":2}},"]}",`)
		}
	}
	b.WriteString(`{"usage":{"prompt_tokens":3,"completion_tokens":3}}`)
	for i := depth - 1; i >= 0; i-- {
		if i%2 == 0 {
			b.WriteByte('}')
		} else {
			b.WriteByte(']')
		}
	}
	return b.String()
}

// deepSchemaJSON is a JSON Schema nested depth levels, as a tool's
// parameters may be.
func deepSchemaJSON(depth int) string {
	return strings.Repeat(`{"type":"object","description":"{\"usage\":{\"input_tokens\":1}}","properties":{"usage":`, depth) +
		`{"type":"string"}` + strings.Repeat(`}}`, depth)
}

// deepUsageAnswers are the upstream's answers, by case: each puts deep
// JSON before its usage. 100000 levels where one object nests in the next;
// fewer with the decoys, which are larger.
var deepUsageAnswers = sync.OnceValue(func() map[string]string {
	deep := deepAgentJSON(600)
	plain := strings.Repeat(`{"a":`, 100_000) + "1" + strings.Repeat("}", 100_000)
	sse := func(events ...string) string { return strings.Join(events, "") }
	return map[string]string{
		"chat": `{"id":"chatcmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":null,` +
			`"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"},"x":` + deep + `}]},"finish_reason":"tool_calls"}],` +
			`"usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46}}`,
		"chat-sse": sse(
			"data: {\"choices\":[{\"delta\":"+deep+"}],\"usage\":null}\n\n",
			"data: {\"choices\":[],\"x\":"+deep+",\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":9,\"total_tokens\":16}}\n\n",
			"data: [DONE]\n\n"),
		"responses": `{"id":"resp_1","object":"response","status":"completed","output":[],` +
			`"text":{"format":{"type":"json_schema","name":"x","schema":` + deepSchemaJSON(2000) + `}},` +
			`"tools":[{"type":"function","name":"f","parameters":` + deepSchemaJSON(40) + `},{"type":"function","name":"g","parameters":` + plain + `}],` +
			`"metadata":` + deep + `,"usage":{"input_tokens":50000,"output_tokens":10,"total_tokens":50010}}`,
		"responses-sse": sse(
			"event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"tools\":["+deep+"],\"usage\":null}}\n\n",
			"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"tools\":[{\"type\":\"function\",\"parameters\":"+
				deepSchemaJSON(2000)+"}],\"metadata\":"+deep+",\"usage\":{\"input_tokens\":30,\"output_tokens\":40,\"total_tokens\":70}}}\n\n"),
		"anthropic": `{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"tool_use","id":"t","name":"f","input":` + plain + `},` +
			`{"type":"tool_use","id":"u","name":"g","input":` + deep + `}],"stop_reason":"tool_use",` +
			`"usage":{"input_tokens":5000,"cache_creation_input_tokens":10,"cache_read_input_tokens":7,"output_tokens":20}}`,
		"anthropic-sse": sse(
			"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"content\":["+deep+"],\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
			"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"tool_use\",\"input\":"+deep+"}}\n\n",
			"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"x\":"+deep+"},\"usage\":{\"output_tokens\":16}}\n\n",
			"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
		"gemini": `{"candidates":[{"content":{"role":"model","parts":[{"functionCall":{"name":"f","args":` + plain + `}},` +
			`{"functionCall":{"name":"g","args":` + deep + `}}]}}],` +
			`"usageMetadata":{"promptTokenCount":11,"candidatesTokenCount":22,"thoughtsTokenCount":3,"totalTokenCount":36}}`,
		"gemini-sse": sse(
			"data: {\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{\"name\":\"f\",\"args\":"+deep+"}}]}}],\"usageMetadata\":{\"promptTokenCount\":11,\"candidatesTokenCount\":2}}\r\n\r\n",
			"data: {\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{\"name\":\"g\",\"args\":"+deep+"}}]}}],\"usageMetadata\":{\"promptTokenCount\":11,\"candidatesTokenCount\":9}}\r\n\r\n"),
		"gemini-array": `[{"candidates":[{"content":{"parts":[{"functionCall":{"name":"f","args":` + deep + `}}]}}],"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":1}},` +
			"\r\n" + `{"candidates":[{"content":{"parts":[{"functionCall":{"name":"g","args":` + plain + `}}]}}],"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":6}}]`,
		// Unreadable: the answer stops inside its usage; or has none.
		"truncated": `{"choices":[{"message":{"x":` + deep + `}}],"usage":{"prompt_tokens":5000`,
		"missing":   `{"choices":[{"message":{"x":` + deep + `}}]}`,
	}
})

// startDeepUsageUpstream answers each POST with the answer its case query
// names, as the API would (JSON, or a stream for the -sse cases), once it
// has the real key.
func startDeepUsageUpstream(t *testing.T) *harness.Upstream {
	t.Helper()
	answers := deepUsageAnswers()
	return harness.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.Header.Get("Authorization") != "Bearer "+realKey {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		c := r.URL.Query().Get("case")
		body, ok := answers[c]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		if strings.HasSuffix(c, "-sse") {
			w.Header().Set("Content-Type", "text/event-stream")
			// Event by event, flushed, as a stream comes.
			for ev := range strings.SplitAfterSeq(body, "\n\n") {
				io.WriteString(w, ev)
				w.(http.Flusher).Flush()
			}
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, body)
	}))
}

// deepPost sends c's request through the proxy, checks that the agent got
// the upstream's whole answer, and returns the request's audit id.
func deepPost(t *testing.T, p *harness.Proxy, tok string, c deepE2ECase) string {
	t.Helper()
	code, body, header := p.Do(t, "POST", c.path, tok, `{"model":"m"}`, harness.JSONBody)
	q := strings.SplitN(c.path, "case=", 2)[1]
	if want := deepUsageAnswers()[q]; code != 200 || body != want {
		t.Fatalf("%s: %d, the agent got %d bytes of the upstream's %d: %.200s", c.name, code, len(body), len(want), body)
	}
	return header.Get("X-Phantom-Request-Id")
}

// engineUsage waits until the engine's record of accessor shows want.
func engineUsage(t *testing.T, v *harness.Vault, accessor string, want map[string]any) {
	t.Helper()
	var info map[string]any
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		info = v.JSON(t, "read", "phantom/tokens/"+accessor)["data"].(map[string]any)
		ok := true
		for k, w := range want {
			ok = ok && info[k] == w
		}
		if ok {
			return
		}
	}
	got := map[string]any{}
	for k := range want {
		got[k] = info[k]
	}
	t.Fatalf("the engine records %v for the token, want %v", got, want)
}

// auditUsage waits for the audit record of request id and returns its usage.
func auditUsage(t *testing.T, p *harness.Proxy, id string) string {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		for _, rec := range auditLines(t, p) {
			if rec["request_id"] == id {
				u, _ := rec["usage"].(string)
				return u
			}
		}
	}
	t.Fatalf("no audit record of request %s", id)
	return ""
}
