package proxy

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/proxy/engine"
	"github.com/phantomvault/phantom/proxy/engine/enginetest"
	"github.com/phantomvault/phantom/proxy/metering"
)

// Upstream answers as the APIs write them, with their usage (metering's
// usage tests read many more).
const (
	chatAnswer      = `{"id":"c","choices":[{"index":0,"message":{"role":"assistant","content":"the \"usage\":{\"prompt_tokens\":1} is text"}}],"usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46,"prompt_tokens_details":{"cached_tokens":5}}}`
	anthropicStream = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":25,\"cache_read_input_tokens\":5,\"output_tokens\":1}}}\n\n" +
		"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n" +
		"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":15}}\n\n" +
		"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"output_tokens\":16}}\n\n" +
		"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
	anthropicStreamCut = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n"
)

// meteredProxy is a proxy whose token carries limits, reporting to a sink,
// in front of an upstream that answers body with contentType.
func meteredProxy(t *testing.T, l resolve.Limits, contentType, body string, status int) (*testProxy, *enginetest.Engine, *metering.UsageReporter) {
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
		{"reported", "application/json", chatAnswer, 200, `{"model":"m"}`,
			resolve.Limits{UsageFormat: "openai"}, 12, 34, 0},
		{"stream reported", "text/event-stream", anthropicStream, 200, `{"model":"c","max_tokens":5}`,
			resolve.Limits{UsageFormat: "anthropic"}, 30, 16, 0},
		{"unreadable: charged at the cap", "application/json", `{"ok":true}`, 200, `{"model":"m"}`,
			resolve.Limits{UsageFormat: "openai", MaxOutputTokens: 64}, int64(len(`{"model":"m"}`)), 64, 1},
		{"cut stream under a cap: the input it saw, the cap", "text/event-stream", anthropicStreamCut, 200, `{"model":"c","max_tokens":50}`,
			resolve.Limits{UsageFormat: "anthropic", MaxOutputTokens: 60}, 25, 60, 1},
		{"cut stream under a budget: the rest of the budget", "text/event-stream", anthropicStreamCut, 200, `{"model":"c","max_tokens":50}`,
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
				if err := rep.Flush(t.Context()); err != nil {
					t.Fatal(err)
				}
				r := sink.Reported("pha_test")
				in, out, est := r.InputTokens, r.OutputTokens, r.Estimated
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

// A gzip answer is read after the proxy decodes it (readableResponse).
func TestUsageReadFromGzip(t *testing.T) {
	var zipped bytes.Buffer
	zw := gzip.NewWriter(&zipped)
	io.WriteString(zw, chatAnswer)
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
	if resp, body := p.post(t, "/v1/chat/completions", `{"model":"m"}`); resp.StatusCode != 200 || body != chatAnswer {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		rep.Flush(t.Context())
		if r := sink.Reported("pha_test"); r.InputTokens == 12 && r.OutputTokens == 34 && r.Estimated == 0 {
			return
		} else if time.Now().After(deadline) {
			t.Fatalf("reported %d %d %d", r.InputTokens, r.OutputTokens, r.Estimated)
		}
	}
}

// Through the proxy, on a route that only counts usage (no budget, no cap):
// usage behind a deep tool input is charged as reported; usage that cannot
// be read is charged nothing, and says so in the audit record and in
// phantom_proxy_usage_unreadable_total, never a silent zero. Under a cap the
// estimate is charged, and said the same way.
func TestUsageUnreadableRecorded(t *testing.T) {
	deep := strings.Repeat(`{"a":`, 1000) + "1" + strings.Repeat(`}`, 1000)
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
			if err := rep.Flush(t.Context()); err != nil {
				t.Fatal(err)
			}
			if r := sink.Reported("pha_test"); r.InputTokens != c.in || r.OutputTokens != c.out || r.Estimated != c.est {
				t.Fatalf("reported in %d out %d est %d, want %d %d %d", r.InputTokens, r.OutputTokens, r.Estimated, c.in, c.out, c.est)
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

func scrapeMetrics(t *testing.T, m *Metrics) string {
	rec := httptest.NewRecorder()
	m.handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}

// sinkFunc is a UsageSink that answers with f.
type sinkFunc func(context.Context, []resolve.UsageReport) error

func (f sinkFunc) ReportUsage(ctx context.Context, reps []resolve.UsageReport) error {
	return f(ctx, reps)
}

// The proxy's reporter counts failed reports in its metrics, keeps what
// failed to send again (Vault's refusal of X-Vault-Forward included), and
// drops a batch Vault refused as malformed, which it would refuse again.
func TestUsageReporterWiring(t *testing.T) {
	m := testMetrics(t)
	var answer error
	calls := 0
	sink := sinkFunc(func(context.Context, []resolve.UsageReport) error { calls++; return answer })
	r := NewUsageReporter(sink, time.Hour, time.Second, m, hclog.NewNullLogger())
	r.Add(resolve.UsageReport{Accessor: "pha_a", InputTokens: 1}, nil)
	for _, err := range []error{
		io.ErrUnexpectedEOF,
		engine.StatusError(http.StatusBadRequest, "forwarding via header X-Vault-Forward is not supported"),
		engine.StatusError(http.StatusBadRequest, "malformed"),
	} {
		answer = err
		if r.Flush(t.Context()) == nil {
			t.Fatalf("%v: reported success", err)
		}
	}
	answer = nil
	if err := r.Flush(t.Context()); err != nil || calls != 3 {
		t.Fatalf("after the malformed batch: %v, %d calls, want it dropped after 3", err, calls)
	}
	got := scrapeMetrics(t, m)
	for _, want := range []string{"phantom_proxy_usage_report_failures_total 3", "phantom_proxy_usage_dropped_total 1"} {
		if !strings.Contains(got, want) {
			t.Errorf("metrics lack %s:\n%s", want, grepLines(got, "usage"))
		}
	}
}
