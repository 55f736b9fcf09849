package proxy

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/proxy/engine/enginetest"
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
				var u usageCount
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
				if u.input != c.in || u.output != c.out || u.complete != c.complete {
					t.Fatalf("got in %d out %d complete %v, want %d %d %v", u.input, u.output, u.complete, c.in, c.out, c.complete)
				}
			})
		}
	}
}

// meteredProxy is a proxy whose token carries limits, reporting to a sink,
// in front of an upstream that answers body with contentType.
func meteredProxy(t *testing.T, l resolve.Limits, contentType, body string, status int) (*testProxy, *enginetest.Engine, *UsageReporter) {
	t.Helper()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(status)
		io.WriteString(w, body)
	}))
	t.Cleanup(up.Close)
	p := newTestProxy(t, up.URL, withLimits(l))
	sink := enginetest.New()
	rep := NewUsageReporter(sink, time.Hour, time.Second, p.srv.metrics, hclog.NewNullLogger())
	p.srv.usage = rep
	return p, sink, rep
}

func TestUsageChargedThroughTheProxy(t *testing.T) {
	for _, c := range []struct {
		name, contentType, body string
		status                  int
		reqBody                 string
		l                       resolve.Limits
		in, out, est            int64
	}{
		{"reported", "application/json", usageCases[0].body, 200, `{"model":"m"}`,
			resolve.Limits{UsageFormat: "openai"}, 12, 34, 0},
		{"stream reported", "text/event-stream", usageCases[7].body, 200, `{"model":"c","max_tokens":5}`,
			resolve.Limits{UsageFormat: "anthropic"}, 30, 16, 0},
		{"unreadable: charged at the cap", "application/json", `{"ok":true}`, 200, `{"model":"m"}`,
			resolve.Limits{UsageFormat: "openai", MaxOutputTokens: 64}, int64(len(`{"model":"m"}`)), 64, 1},
		{"cut stream under a cap: the input it saw, the cap", "text/event-stream", usageCases[8].body, 200, `{"model":"c","max_tokens":50}`,
			resolve.Limits{UsageFormat: "anthropic", MaxOutputTokens: 60}, 25, 60, 1},
		{"cut stream under a budget: the rest of the budget", "text/event-stream", usageCases[8].body, 200, `{"model":"c","max_tokens":50}`,
			resolve.Limits{UsageFormat: "anthropic", MaxOutputTokens: 60, BudgetRemaining: new(int64(100))}, 25, 75, 1},
		{"unreadable without a budget or cap: not charged", "application/json", `{"ok":true}`, 200, `{"model":"m"}`,
			resolve.Limits{UsageFormat: "openai"}, 0, 0, 0},
		{"error answers are not charged", "application/json", `{"error":{}}`, 400, `{"model":"m"}`,
			resolve.Limits{UsageFormat: "openai", MaxOutputTokens: 64}, 0, 0, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, sink, rep := meteredProxy(t, c.l, c.contentType, c.body, c.status)
			path := "/v1/chat/completions"
			if c.l.UsageFormat == resolve.UsageAnthropic {
				path = "/v1/messages"
			}
			resp, body := p.post(t, path, c.reqBody)
			if resp.StatusCode != c.status {
				t.Fatalf("%d %s", resp.StatusCode, body)
			}
			if body != c.body {
				t.Fatalf("the agent got %q, not the upstream's body", body)
			}
			// The tap's Close runs as ReverseProxy finishes, just after the
			// agent has the body.
			deadline := time.Now().Add(5 * time.Second)
			for {
				if err := rep.flush(t.Context()); err != nil {
					t.Fatal(err)
				}
				in, out, est := total(sink, "pha_test")
				if in == c.in && out == c.out && est == c.est {
					break
				}
				if time.Now().After(deadline) || c.in == 0 && c.out == 0 {
					if in != c.in || out != c.out || est != c.est {
						t.Fatalf("reported in %d out %d est %d, want %d %d %d", in, out, est, c.in, c.out, c.est)
					}
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			if c.in+c.out > 0 {
				metrics := scrape(t, p)
				want := fmt.Sprintf(`phantom_proxy_llm_tokens_total{kind="output",route="r"} %d`, c.out)
				if !strings.Contains(metrics, want) {
					t.Fatalf("metrics lack %s:\n%s", want, grepLines(metrics, "llm_tokens"))
				}
			}
		})
	}
}

func scrape(t *testing.T, p *testProxy) string {
	t.Helper()
	rec := httptest.NewRecorder()
	p.srv.AdminHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}

func grepLines(s, sub string) string {
	var b bytes.Buffer
	for line := range strings.Lines(s) {
		if strings.Contains(line, sub) {
			b.WriteString(line)
		}
	}
	return b.String()
}

func TestUsageReporterKeepsWhatFailed(t *testing.T) {
	m := testMetrics(t)
	sink := enginetest.New()
	sink.Fail(io.ErrUnexpectedEOF)
	r := NewUsageReporter(sink, time.Hour, time.Second, m, hclog.NewNullLogger())
	for i := range 3000 {
		r.add(resolve.UsageReport{Accessor: fmt.Sprintf("pha_%d", i%1500), InputTokens: 1, OutputTokens: 2}, nil)
	}
	if err := r.flush(t.Context()); err == nil {
		t.Fatal("a failing sink reported success")
	}
	if n := sink.ReportCalls(); n != 2 { // 1500 tokens: two calls of at most MaxReports
		t.Fatalf("%d calls", n)
	}
	sink.Fail(nil)
	r.add(resolve.UsageReport{Accessor: "pha_0", InputTokens: 10, Estimated: 1}, nil)
	if err := r.flush(t.Context()); err != nil {
		t.Fatal(err)
	}
	if in, out, est := total(sink, "pha_0"); in != 12 || out != 4 || est != 1 {
		t.Fatalf("pha_0: %d %d %d", in, out, est)
	}
	if in, _, _ := total(sink, "pha_1499"); in != 2 {
		t.Fatalf("pha_1499: %d", in)
	}
	if !strings.Contains(grepLines(scrapeMetrics(t, m), "report_failures"), "phantom_proxy_usage_report_failures_total 2") {
		t.Fatal("failures not counted")
	}
}

func scrapeMetrics(t *testing.T, m *Metrics) string {
	rec := httptest.NewRecorder()
	m.handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}

// A gzip answer is read after the proxy decodes it (readableResponse).
func TestUsageReadFromGzip(t *testing.T) {
	var zipped bytes.Buffer
	zw := gzip.NewWriter(&zipped)
	io.WriteString(zw, usageCases[0].body)
	zw.Close()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Encoding", "gzip")
		w.Write(zipped.Bytes())
	}))
	t.Cleanup(up.Close)
	p := newTestProxy(t, up.URL, withLimits(resolve.Limits{UsageFormat: resolve.UsageOpenAI}))
	sink := enginetest.New()
	rep := NewUsageReporter(sink, time.Hour, time.Second, p.srv.metrics, hclog.NewNullLogger())
	p.srv.usage = rep
	if resp, body := p.post(t, "/v1/chat/completions", `{"model":"m"}`); resp.StatusCode != 200 || body != usageCases[0].body {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		rep.flush(t.Context())
		if in, out, est := total(sink, "pha_test"); in == 12 && out == 34 && est == 0 {
			return
		} else if time.Now().After(deadline) {
			t.Fatalf("reported %d %d %d", in, out, est)
		}
	}
}

// Run's end sends what is left: usage measured just before shutdown is
// not lost.
func TestUsageReporterDrainsOnShutdown(t *testing.T) {
	sink := enginetest.New()
	r := NewUsageReporter(sink, time.Hour, time.Second, testMetrics(t), hclog.NewNullLogger())
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	r.add(resolve.UsageReport{Accessor: "pha_a", InputTokens: 3, OutputTokens: 4}, nil)
	cancel()
	<-done
	if in, out, _ := total(sink, "pha_a"); in != 3 || out != 4 {
		t.Fatalf("after shutdown: %d %d", in, out)
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
			var u usageCount
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
			if u.input != 5 || u.output != 6 || !u.complete || u.malformed {
				t.Fatalf("%s: %q read as in %d out %d complete %v malformed %v", c.format, c.doc, u.input, u.output, u.complete, u.malformed)
			}
		}
	})
}
