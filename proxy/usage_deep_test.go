package proxy

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/phantomvault/phantom/internal/resolve"
)

// Usage behind JSON the agent or the model writes, as deep as they like:
// the Responses API echoes the request's tools (JSON Schemas) and text
// format, Anthropic's tool_use.input and Gemini's functionCall.args are
// objects the model writes. The usage the API reports after them is read
// at any depth before it, and nothing inside them is taken for usage.

// decoys are keys and strings that look like usage, or like the structure
// around it, at every level of a deep value.
const decoys = `"usage":{"prompt_tokens":1,"completion_tokens":1,"input_tokens":1,"output_tokens":1},` +
	`"usageMetadata":{"promptTokenCount":1,"candidatesTokenCount":1},` +
	`"response":{"usage":{"input_tokens":1,"output_tokens":1}},"message":{"usage":{"input_tokens":1,"output_tokens":1}},` +
	`"s":"}]\"{[\\","\"usage\"":"\"usage\":{\"prompt_tokens\":1}}}}",`

// deepDecoys is a value nested n levels, objects and arrays in turn, with
// decoys at every object level.
func deepDecoys(n int) string {
	var b strings.Builder
	for i := range n {
		if i%2 == 0 {
			b.WriteString(`{` + decoys + `"k":`)
		} else {
			b.WriteString(`[{"usage":{"prompt_tokens":2}},"]}",`)
		}
	}
	b.WriteString(`{"usage":{"prompt_tokens":3,"completion_tokens":3}}`)
	for i := n - 1; i >= 0; i-- {
		if i%2 == 0 {
			b.WriteString(`}`)
		} else {
			b.WriteString(`]`)
		}
	}
	return b.String()
}

// deepPlain is a value nested n levels with nothing else in it.
func deepPlain(n int, open, close string) string {
	return strings.Repeat(open, n) + "1" + strings.Repeat(close, n)
}

// deepSchema is a JSON Schema nested n levels, as an agent's tool may have.
func deepSchema(n int) string {
	return strings.Repeat(`{"type":"object","description":"usage: {\"input_tokens\":1}","properties":{"usage":`, n) +
		`{"type":"string"}` + strings.Repeat(`}}`, n)
}

var deepUsageCases = []struct {
	name, format string
	sse          bool
	body         string
	in, out      int64
}{
	// The finding's two measurements.
	{"responses, a tools schema 40 levels deep", "openai", false,
		`{"id":"resp_1","object":"response","instructions":null,"output":[],` +
			`"text":{"format":{"type":"json_schema","name":"x","schema":` + deepSchema(40) + `}},` +
			`"tools":[{"type":"function","name":"f","parameters":` + deepSchema(40) + `}],` +
			`"usage":{"input_tokens":50000,"output_tokens":10,"total_tokens":50010}}`,
		50000, 10},
	{"anthropic, a tool input 80 levels deep", "anthropic", false,
		`{"id":"msg","type":"message","content":[{"type":"tool_use","id":"t","name":"f","input":` + deepPlain(80, `{"a":`, `}`) + `}],` +
			`"usage":{"input_tokens":5000,"output_tokens":20}}`,
		5000, 20},
	{"openai chat, decoys 300 levels deep", "openai", false,
		`{"id":"c","choices":[{"index":0,"message":{"role":"assistant","content":null,"x":` + deepDecoys(300) + `}}],` +
			`"usage":{"prompt_tokens":12,"completion_tokens":34}}`,
		12, 34},
	{"openai chat stream, deep chunks", "openai", true,
		"data: {\"choices\":[{\"delta\":" + deepDecoys(300) + "}],\"usage\":null}\n\n" +
			"data: {\"choices\":[],\"x\":" + deepDecoys(300) + ",\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":9}}\n\ndata: [DONE]\n\n",
		7, 9},
	{"responses stream, deep tools in every event", "openai", true,
		"event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"tools\":[" + deepDecoys(300) + "],\"usage\":null}}\n\n" +
			"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"tools\":[{\"parameters\":" + deepSchema(500) +
			"}],\"metadata\":" + deepDecoys(300) + ",\"usage\":{\"input_tokens\":30,\"output_tokens\":40}}}\n\n",
		30, 40},
	{"anthropic, decoys in the tool input", "anthropic", false,
		`{"content":[{"type":"tool_use","input":` + deepDecoys(301) + `}],"usage":{"input_tokens":10,"cache_read_input_tokens":4,"output_tokens":20}}`,
		14, 20},
	{"anthropic stream, deep tool input", "anthropic", true,
		"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"content\":[" + deepDecoys(300) + "],\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n" +
			"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"content_block\":{\"type\":\"tool_use\",\"input\":" + deepDecoys(300) + "}}\n\n" +
			"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":" + deepDecoys(300) + ",\"usage\":{\"output_tokens\":16}}\n\n",
		25, 16},
	{"gemini, deep function args", "gemini", false,
		`{"candidates":[{"content":{"parts":[{"functionCall":{"name":"f","args":` + deepDecoys(300) + `}}]}}],` +
			`"usageMetadataXXXXXXXXXXXXXXXX":{"promptTokenCount":1},"usageMetadat":{"promptTokenCount":1},` +
			`"usageMetadata":{"promptTokenCount":11,"candidatesTokenCount":22,"thoughtsTokenCount":3}}`,
		11, 25},
	{"gemini stream, deep function args", "gemini", true,
		"data: {\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{\"args\":" + deepDecoys(300) + "}}]}}],\"usageMetadata\":{\"promptTokenCount\":11,\"candidatesTokenCount\":2}}\r\n\r\n" +
			"data: {\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{\"args\":" + deepDecoys(300) + "}}]}}],\"usageMetadata\":{\"promptTokenCount\":11,\"candidatesTokenCount\":9}}\r\n\r\n",
		11, 9},
	{"gemini json array stream, deep function args", "gemini", false,
		`[{"candidates":[{"content":{"parts":[{"functionCall":{"args":` + deepDecoys(300) + `}}]}}],"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":1}},` +
			`{"candidates":[` + deepDecoys(300) + `],"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":6}}]`,
		4, 6},
	{"100000 objects deep", "openai", false,
		`{"choices":[` + deepPlain(100_000, `{"usage":{"prompt_tokens":1},"a":`, `}`) + `],"usage":{"prompt_tokens":5,"completion_tokens":6}}`,
		5, 6},
	{"100000 arrays deep", "anthropic", false,
		`{"content":` + deepPlain(100_000, `[`, `]`) + `,"usage":{"input_tokens":5,"output_tokens":6}}`,
		5, 6},
	{"two usage objects: the last counts", "openai", false,
		`{"usage":{"prompt_tokens":1,"completion_tokens":1},"x":` + deepDecoys(100) + `,"usage":{"prompt_tokens":7,"completion_tokens":8}}`,
		7, 8},
}

func TestUsageBehindDeepJSON(t *testing.T) {
	for _, c := range deepUsageCases {
		steps := []int{len(c.body), 4096, 7, 1}
		if len(c.body) > 1<<20 {
			steps = steps[:3]
		}
		for _, step := range steps {
			t.Run(fmt.Sprintf("%s/%d", c.name, step), func(t *testing.T) {
				u, scan := scanInSteps(c.format, c.sse, c.body, step)
				if u.input != c.in || u.output != c.out || !u.complete || u.malformed {
					t.Fatalf("got in %d out %d complete %v malformed %v, want %d %d true false",
						u.input, u.output, u.complete, u.malformed, c.in, c.out)
				}
				if n := cap(scan.capBuf); n > maxUsageObject+1 {
					t.Fatalf("the scanner kept %d bytes", n)
				}
			})
		}
	}
}

// scanInSteps feeds body to a scanner step bytes at a time and ends it.
func scanInSteps(format string, sse bool, body string, step int) (*usageCount, *jsonUsageScanner) {
	u := &usageCount{}
	j := newJSONUsageScanner(format, u)
	write, end := j.write, j.end
	if sse {
		s := newSSEUsageScanner(format, u)
		j, write, end = s.json, s.write, s.end
	}
	for b := []byte(body); len(b) > 0; {
		n := min(step, len(b))
		write(b[:n])
		b = b[n:]
	}
	end()
	return u, j
}

// The scanner's memory does not grow with the depth it skips: a million
// levels cost no more allocations than a thousand.
func TestUsageScannerMemoryBounded(t *testing.T) {
	allocs := func(depth int) float64 {
		body := []byte(`{"choices":` + deepPlain(depth, `{"a":[`, `]}`) + `,"usage":{"prompt_tokens":5,"completion_tokens":6}}`)
		return testing.AllocsPerRun(3, func() {
			var u usageCount
			s := newJSONUsageScanner(resolve.UsageOpenAI, &u)
			for b := body; len(b) > 0; {
				n := min(32<<10, len(b))
				s.write(b[:n])
				b = b[n:]
			}
			if u.input != 5 || u.output != 6 {
				t.Fatalf("depth %d: in %d out %d", depth, u.input, u.output)
			}
		})
	}
	small, huge := allocs(1000), allocs(1_000_000)
	if huge > small {
		t.Fatalf("%v allocations at depth 1e6, %v at depth 1e3: memory grows with depth", huge, small)
	}
}

// What the scanner reports when the usage cannot be read.
func TestUsageUnreadableScan(t *testing.T) {
	for _, c := range []struct {
		name, body string
		malformed  bool
	}{
		{"no usage after a deep value", `{"choices":[` + deepDecoys(200) + `]}`, false},
		{"usage only inside a deep value", `{"choices":[` + deepDecoys(200) + `],"usage":null}`, false},
		{"truncated in the usage", `{"choices":[` + deepDecoys(200) + `],"usage":{"prompt_tokens":5`, true},
		{"truncated in a deep value", `{"choices":[` + deepDecoys(200), true},
		{"not JSON", `{"choices":[1}],"usage":{"prompt_tokens":5,"completion_tokens":6}}`, true},
		{"usage not JSON", `{"usage":{"prompt_tokens":5,,}}`, true},
		{"usage too long", `{"usage":{"prompt_tokens":5,"completion_tokens":6,"x":"` + strings.Repeat("a", maxUsageObject) + `"}}`, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, step := range []int{len(c.body), 1} {
				u, _ := scanInSteps(resolve.UsageOpenAI, false, c.body, step)
				if u.complete || u.malformed != c.malformed {
					t.Fatalf("step %d: complete %v malformed %v, want false %v", step, u.complete, u.malformed, c.malformed)
				}
			}
		})
	}
}

// Through the proxy, on a route that only counts usage (no budget, no cap):
// usage behind a deep tool input is charged as reported; usage that cannot
// be read is charged nothing, and says so in the audit record and in
// phantom_proxy_usage_unreadable_total, never a silent zero. Under a cap the
// estimate is charged, and said the same way.
func TestUsageUnreadableRecorded(t *testing.T) {
	deep := deepPlain(1000, `{"a":`, `}`)
	for _, c := range []struct {
		name, body   string
		l            resolve.Limits
		in, out, est int64
		audit        string
		reason       string
	}{
		{"deep, then usage", `{"content":[{"type":"tool_use","input":` + deep + `}],"usage":{"input_tokens":5000,"output_tokens":20}}`,
			resolve.Limits{UsageFormat: resolve.UsageAnthropic}, 5000, 20, 0, "measured", ""},
		{"truncated", `{"content":[{"type":"tool_use","input":` + deep + `}],"usage":{"input_tokens":5000`,
			resolve.Limits{UsageFormat: resolve.UsageAnthropic}, 0, 0, 0, "unreadable", "malformed"},
		{"missing", `{"content":[{"type":"tool_use","input":` + deep + `}]}`,
			resolve.Limits{UsageFormat: resolve.UsageAnthropic}, 0, 0, 0, "unreadable", "missing"},
		{"missing under a cap: the estimate", `{"content":[{"type":"tool_use","input":` + deep + `}]}`,
			resolve.Limits{UsageFormat: resolve.UsageAnthropic, MaxOutputTokens: 64}, int64(len(`{"model":"m"}`)), 64, 1, "unreadable", "missing"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, sink, rep := meteredProxy(t, c.l, "application/json", c.body, 200)
			resp, body := p.post(t, "/v1/messages", `{"model":"m"}`)
			if resp.StatusCode != 200 || body != c.body {
				t.Fatalf("%d, the agent got %d bytes of the upstream's %d", resp.StatusCode, len(body), len(c.body))
			}
			var recs []auditRecord
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				if recs = p.auditLines(t); len(recs) == 1 || time.Now().After(deadline) {
					break
				}
			}
			if len(recs) != 1 || recs[0].Usage != c.audit {
				t.Fatalf("audit records %+v, want one with usage %q", recs, c.audit)
			}
			if err := rep.flush(t.Context()); err != nil {
				t.Fatal(err)
			}
			if in, out, est := total(sink, "pha_test"); in != c.in || out != c.out || est != c.est {
				t.Fatalf("reported in %d out %d est %d, want %d %d %d", in, out, est, c.in, c.out, c.est)
			}
			got := grepLines(scrape(t, p), "phantom_proxy_usage_unreadable_total{")
			want := ""
			if c.reason != "" {
				want = fmt.Sprintf("phantom_proxy_usage_unreadable_total{reason=%q,route=\"r\"} 1\n", c.reason)
			}
			if got != want {
				t.Fatalf("metrics:\n%s\nwant:\n%s", got, want)
			}
		})
	}
}

// A request sent and never answered is audited as unreadable too.
func TestUsageUnansweredRecorded(t *testing.T) {
	var r *readUsage
	if got := r.unreadable(); got != "unanswered" {
		t.Fatalf("%q", got)
	}
	if got := (&readUsage{done: true}).unreadable(); got != "cut" {
		t.Fatalf("%q", got)
	}
}

// BenchmarkUsageScanner: a long answer of model text, and one of deep JSON.
func BenchmarkUsageScanner(b *testing.B) {
	for _, c := range []struct{ name, body string }{
		{"text", `{"choices":[{"message":{"content":"` + strings.Repeat(`lorem ipsum \"dolor\" {sit} amet `, 1<<15) + `"}}],"usage":{"prompt_tokens":5,"completion_tokens":6}}`},
		{"deep", `{"choices":` + deepPlain(100_000, `{"a":[`, `]}`) + `,"usage":{"prompt_tokens":5,"completion_tokens":6}}`},
	} {
		b.Run(c.name, func(b *testing.B) {
			body := []byte(c.body)
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				var u usageCount
				s := newJSONUsageScanner(resolve.UsageOpenAI, &u)
				for p := body; len(p) > 0; {
					n := min(32<<10, len(p))
					s.write(p[:n])
					p = p[n:]
				}
				if u.output != 6 {
					b.Fatal(u)
				}
			}
		})
	}
}
