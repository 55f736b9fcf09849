package metering

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/phantomvault/phantom/internal/resolve"
)

// usageCases are upstream bodies as each API writes them, with the usage
// they report.
var usageCases = []struct {
	name, format string
	sse          bool
	body         string
	in, out      int64
	complete     bool
}{
	{"openai chat", "openai", false,
		`{"id":"c","choices":[{"index":0,"message":{"role":"assistant","content":"the \"usage\":{\"prompt_tokens\":1} is text"}}],"usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46,"prompt_tokens_details":{"cached_tokens":5}}}`,
		12, 34, true},
	{"openai chat stream", "openai", true,
		"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n" +
			"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":9,\"total_tokens\":16}}\n\ndata: [DONE]\n\n",
		7, 9, true},
	{"openai stream without usage", "openai", true,
		"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\ndata: [DONE]\n\n", 0, 0, false},
	{"openai responses", "openai", false,
		`{"id":"resp_1","object":"response","output":[{"type":"message","content":[{"type":"output_text","text":"x"}]}],"usage":{"input_tokens":21,"input_tokens_details":{"cached_tokens":0},"output_tokens":5,"output_tokens_details":{"reasoning_tokens":2},"total_tokens":26},"metadata":{}}`,
		21, 5, true},
	{"openai responses stream", "openai", true,
		"event: response.created\ndata: {\"type\":\"response.created\",\"response\":{\"id\":\"r\",\"usage\":null}}\n\n" +
			"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"{\\\"usage\\\":{\\\"input_tokens\\\":1}}\"}\n\n" +
			"event: response.completed\r\ndata: {\"type\":\"response.completed\",\"response\":{\"id\":\"r\",\"output\":[],\"usage\":{\"input_tokens\":30,\"output_tokens\":40,\"total_tokens\":70}}}\r\n\r\n",
		30, 40, true},
	{"openai embeddings", "openai", false, `{"data":[{"embedding":[0.1,0.2]}],"usage":{"prompt_tokens":8,"total_tokens":8}}`, 8, 0, true},
	{"anthropic", "anthropic", false,
		`{"id":"msg","content":[{"type":"tool_use","input":{"usage":{"input_tokens":1,"output_tokens":1}}}],"usage":{"input_tokens":10,"cache_creation_input_tokens":3,"cache_read_input_tokens":4,"output_tokens":20}}`,
		17, 20, true},
	{"anthropic stream", "anthropic", true,
		"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":25,\"cache_read_input_tokens\":5,\"output_tokens\":1}}}\n\n" +
			"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n" +
			"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n" +
			"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"output_tokens\":16}}\n\n" +
			"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
		30, 16, true},
	{"anthropic stream cut", "anthropic", true,
		"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n", 25, 1, false},
	{"gemini", "gemini", false,
		`{"candidates":[{"content":{"parts":[{"functionCall":{"name":"f","args":{"usageMetadata":{"promptTokenCount":1}}}}]}}],"usageMetadata":{"promptTokenCount":11,"candidatesTokenCount":22,"thoughtsTokenCount":3,"totalTokenCount":36},"modelVersion":"g"}`,
		11, 25, true},
	{"gemini stream", "gemini", true,
		"data: {\"candidates\":[],\"usageMetadata\":{\"promptTokenCount\":11,\"candidatesTokenCount\":2}}\r\n\r\n" +
			"data: {\"candidates\":[],\"usageMetadata\":{\"promptTokenCount\":11,\"candidatesTokenCount\":9,\"totalTokenCount\":20}}\r\n\r\n",
		11, 9, true},
	{"gemini json array stream", "gemini", false,
		`[{"candidates":[],"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":1}},` + "\n" + `{"candidates":[],"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":6}}]`,
		4, 6, true},
	{"usage too deep", "openai", false, `{"choices":[{"usage":{"prompt_tokens":1,"completion_tokens":1}}]}`, 0, 0, false},
	{"not JSON", "openai", false, `<html>usage</html>`, 0, 0, false},
}

func TestUsageParsing(t *testing.T) {
	for _, c := range usageCases {
		// Whole, and one byte at a time: no boundary may matter.
		for _, step := range []int{len(c.body), 1, 7} {
			t.Run(fmt.Sprintf("%s/%d", c.name, step), func(t *testing.T) {
				var u Usage
				write := newJSONUsageScanner(c.format, &u).write
				if c.sse {
					write = newSSEUsageScanner(c.format, &u).write
				}
				b := []byte(c.body)
				for len(b) > 0 {
					n := min(step, len(b))
					write(b[:n])
					b = b[n:]
				}
				if u.Input != c.in || u.Output != c.out || u.Complete != c.complete {
					t.Fatalf("got in %d out %d complete %v, want %d %d %v", u.Input, u.Output, u.Complete, c.in, c.out, c.complete)
				}
			})
		}
	}
}

// The scanners never panic, whatever the upstream sends, however split;
// and whatever JSON value comes before the usage (an echoed tools schema, a
// tool input: any depth, any decoy), the usage after it is read exactly.
func FuzzUsageScanners(f *testing.F) {
	for _, c := range usageCases {
		f.Add(c.body, uint8(3))
	}
	f.Add(deepDecoys(9), uint8(1)) // usage_deep_test.go
	f.Add(deepSchema(5), uint8(2))
	f.Add(deepPlain(70, `[`, `]`), uint8(0))
	f.Fuzz(func(t *testing.T, body string, step uint8) {
		n := int(step%64) + 1
		for _, format := range resolve.UsageFormats {
			var u Usage
			j, s := newJSONUsageScanner(format, &u), newSSEUsageScanner(format, &u)
			for b := []byte(body); len(b) > 0; {
				k := min(n, len(b))
				j.write(b[:k])
				s.write(b[:k])
				b = b[k:]
			}
		}
		if !json.Valid([]byte(body)) {
			return
		}
		for _, c := range []struct{ format, doc string }{
			{resolve.UsageOpenAI, `{"choices":` + body + `,"x":[` + body + `],"usage":{"prompt_tokens":5,"completion_tokens":6}}`},
			{resolve.UsageAnthropic, `{"content":` + body + `,"usage":{"input_tokens":5,"output_tokens":6},"stop":` + body + `}`},
			{resolve.UsageGemini, `[{"candidates":` + body + `,"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":6}}]`},
		} {
			u, _ := scanInSteps(c.format, false, c.doc, n)
			if u.Input != 5 || u.Output != 6 || !u.Complete || u.Malformed {
				t.Fatalf("%s: %q read as in %d out %d complete %v malformed %v", c.format, c.doc, u.Input, u.Output, u.Complete, u.Malformed)
			}
		}
	})
}
