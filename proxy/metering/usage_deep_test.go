package metering

import (
	"fmt"
	"strings"
	"testing"

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
				if u.Input != c.in || u.Output != c.out || !u.Complete || u.Malformed {
					t.Fatalf("got in %d out %d complete %v malformed %v, want %d %d true false",
						u.Input, u.Output, u.Complete, u.Malformed, c.in, c.out)
				}
				if n := cap(scan.capBuf); n > maxUsageObject+1 {
					t.Fatalf("the scanner kept %d bytes", n)
				}
			})
		}
	}
}

// scanInSteps feeds body to a scanner step bytes at a time and ends it.
func scanInSteps(format string, sse bool, body string, step int) (*Usage, *jsonUsageScanner) {
	u := &Usage{}
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
			var u Usage
			s := newJSONUsageScanner(resolve.UsageOpenAI, &u)
			for b := body; len(b) > 0; {
				n := min(32<<10, len(b))
				s.write(b[:n])
				b = b[n:]
			}
			if u.Input != 5 || u.Output != 6 {
				t.Fatalf("depth %d: in %d out %d", depth, u.Input, u.Output)
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
				if u.Complete || u.Malformed != c.malformed {
					t.Fatalf("step %d: complete %v malformed %v, want false %v", step, u.Complete, u.Malformed, c.malformed)
				}
			}
		})
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
				var u Usage
				s := newJSONUsageScanner(resolve.UsageOpenAI, &u)
				for p := body; len(p) > 0; {
					n := min(32<<10, len(p))
					s.write(p[:n])
					p = p[n:]
				}
				if u.Output != 6 {
					b.Fatal(u)
				}
			}
		})
	}
}
