package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/proxy/engine/enginetest"
	"github.com/phantomvault/phantom/proxy/metering"
)

// waitReported flushes rep until the sink holds want for pha_test.
func waitReported(t *testing.T, rep *metering.UsageReporter, sink *enginetest.Engine, want resolve.UsageReport) {
	t.Helper()
	want.Accessor = "pha_test"
	var got resolve.UsageReport
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		rep.Flush(t.Context())
		if got = sink.Reported("pha_test"); got == want {
			return
		}
	}
	t.Fatalf("reported %+v, want %+v", got, want)
}

// Every request admitted under a budget is settled once, whatever became of
// it; only what reached the upstream and was answered is charged.
func TestSettledOnceWhateverHappens(t *testing.T) {
	var status sync.Map // path -> status the stand-in answers
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		code := 200
		if v, ok := status.Load(r.URL.Path); ok {
			code = v.(int)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		if code == 200 {
			io.WriteString(w, `{"usage":{"prompt_tokens":3,"completion_tokens":4}}`)
		}
	}))
	t.Cleanup(up.Close)
	status.Store("/v1/embeddings", 500)
	p := newTestProxy(t, up.URL, withLimits(resolve.Limits{UsageFormat: resolve.UsageOpenAI, AllowedModels: []string{"m"},
		MaxOutputTokens: 10, BudgetRemaining: new(int64(1000))}))
	sink := enginetest.New()
	rep := NewUsageReporter(sink, time.Hour, time.Second, p.srv.metrics, hclog.NewNullLogger())
	p.srv.usage = rep
	for _, c := range []struct {
		method, path, body string
		status             int
	}{
		{"POST", "/v1/chat/completions", `{"model":"m"}`, 200},            // charged 3+4
		{"POST", "/v1/chat/completions", `{"model":"x"}`, 403},            // model refused
		{"POST", "/v1/chat/completions", `{"model":"m","n":2}`, 403},      // choices refused
		{"POST", "/v1/chat/completions/", `{"model":"m"}`, 403},           // endpoint refused
		{"POST", "/v1/chat/completions", `not json`, 400},                 // body refused
		{"POST", "/v1/embeddings", `{"model":"m","input":"x"}`, 500},      // upstream error: nothing charged
		{"GET", "/v1/models", "", 200},                                    // no body
		{"POST", "/v1/responses", `{"model":"m","background":true}`, 400}, // background refused
	} {
		var body io.Reader
		if c.body != "" {
			body = strings.NewReader(c.body)
		}
		req, _ := http.NewRequest(c.method, p.url+c.path, body)
		req.Header.Set("Authorization", "Bearer "+p.token)
		if resp, b := do(t, req); resp.StatusCode != c.status {
			t.Fatalf("%s %s %s: %d %s", c.method, c.path, c.body, resp.StatusCode, b)
		}
	}
	// A body declared too large is refused before the resolve: a refusal
	// after it would leave the engine's reservation unsettled.
	conn, err := net.Dial("tcp", strings.TrimPrefix(p.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+p.token+
		"\r\nContent-Type: application/json\r\nContent-Length: 999999999999\r\n\r\n")
	if line, _ := bufio.NewReader(conn).ReadString('\n'); !strings.HasPrefix(line, "HTTP/1.1 413 ") {
		t.Fatalf("a body declared too large: %q", line)
	}
	waitReported(t, rep, sink, resolve.UsageReport{InputTokens: 3, OutputTokens: 4, Settled: 8})
	resolved := len(p.engine.Resolves())
	if resolved != 8 {
		t.Fatalf("%d resolves and 8 settlements: a resolved request went unsettled", resolved)
	}

	// The upstream cannot be reached: settled, nothing charged (nothing was sent).
	p2 := newTestProxy(t, "http://127.0.0.1:1", withLimits(resolve.Limits{UsageFormat: resolve.UsageOpenAI, MaxOutputTokens: 10, BudgetRemaining: new(int64(1000))}))
	sink2 := enginetest.New()
	rep2 := NewUsageReporter(sink2, time.Hour, time.Second, p2.srv.metrics, hclog.NewNullLogger())
	p2.srv.usage = rep2
	if resp, b := p2.post(t, "/v1/chat/completions", `{"model":"m"}`); resp.StatusCode != 502 {
		t.Fatalf("unreachable: %d %s", resp.StatusCode, b)
	}
	waitReported(t, rep2, sink2, resolve.UsageReport{Settled: 1})
}

// Known endpoints only, under a cap or a budget, matched exactly.
func TestEndpointRule(t *testing.T) {
	up, seen := recordingUpstream(t)
	p := newTestProxy(t, up.URL, nil)
	setLimits := func(l resolve.Limits) {
		p.engine.Edit(p.token, func(g *resolve.Grant) { g.Limits = &l })
	}
	capped := func(format string) resolve.Limits { return resolve.Limits{UsageFormat: format, MaxOutputTokens: 100} }
	for _, c := range []struct {
		l      resolve.Limits
		path   string
		status int
	}{
		{capped("openai"), "/v1/chat/completions", 200},
		{capped("openai"), "/v1/completions", 200},
		{capped("openai"), "/v1/responses", 200},
		{capped("openai"), "/v1/embeddings", 200},
		{capped("openai"), "/v1/chat/completions/", 403},
		{capped("openai"), "/v1/chat/completion", 403},
		{capped("openai"), "/v1/chat/complet%69ons", 403},
		{capped("openai"), "/v1/batches", 403},
		{capped("openai"), "/v1/responses/r1/cancel", 403},
		{capped("openai"), "/v1/images/generations", 403},
		{capped("anthropic"), "/v1/messages", 200},
		{capped("anthropic"), "/v1/messages/count_tokens", 200},
		{capped("anthropic"), "/v1/messages/batches", 403},
		{capped("anthropic"), "/v1/chat/completions", 403}, // Anthropic's OpenAI-compatible path
		{capped("anthropic"), "/v1/complete", 403},
		{capped("gemini"), "/v1beta/models/g:generateContent", 200},
		{capped("gemini"), "/v1beta/models/g:streamGenerateContent", 200},
		{capped("gemini"), "/v1beta/models/g:countTokens", 200},
		{capped("gemini"), "/v1beta/models/g:embedContent", 200},
		{capped("gemini"), "/v1beta/openai/chat/completions", 403},
		{capped("gemini"), "/v1beta/models/g:batchGenerateContent", 403},
		{capped("gemini"), "/v1beta/models/g:generateContent/models/h", 403},
		{capped("gemini"), "/v1beta/models/:generateContent", 403},
		{capped("gemini"), "/v1beta/models/g%3AstreamGenerateContent:countTokens", 403},
		{capped("gemini"), "/v1beta/models/g:x:countTokens", 403},
		{capped("gemini"), "/v1/projects/p/locations/l/publishers/google/models/g:rawPredict", 403},
		{capped("gemini"), "/v1/projects/p/locations/l/publishers/google/models/g:generateContent", 200},
		{resolve.Limits{UsageFormat: "openai", BudgetRemaining: new(int64(5))}, "/v1/chat/completions/", 403},
		{resolve.Limits{UsageFormat: "openai"}, "/v1/chat/completions/", 200}, // counted only: no rule
	} {
		setLimits(c.l)
		before := seen.count()
		resp, body := p.post(t, c.path, `{}`)
		if resp.StatusCode != c.status {
			t.Errorf("%s %s: %d, want %d: %s", c.l.UsageFormat, c.path, resp.StatusCode, c.status, body)
			continue
		}
		if c.status == 403 {
			if !strings.Contains(body, resolve.ReasonPathNotAllowed) || seen.count() != before {
				t.Errorf("%s: %s (forwarded: %v)", c.path, body, seen.count() != before)
			}
		}
	}
	// No body: listing and reading stay allowed; a PUT with a body does not.
	setLimits(capped("openai"))
	if resp, body := get(t, p.url+"/v1/models", map[string]string{"Authorization": "Bearer " + p.token}); resp.StatusCode != 200 {
		t.Fatalf("GET: %d %s", resp.StatusCode, body)
	}
	req, _ := http.NewRequest("PUT", p.url+"/v1/chat/completions", strings.NewReader(`{}`))
	req.Header.Set("Authorization", "Bearer "+p.token)
	if resp, body := do(t, req); resp.StatusCode != 403 {
		t.Fatalf("PUT with a body: %d %s", resp.StatusCode, body)
	}
}

// streamingUpstream sends one chunk, waits for next, then more than a
// socket buffers and the usage, and tells done when it has written all.
func streamingUpstream(t *testing.T, next <-chan struct{}, done chan<- struct{}) *httptest.Server {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n")
		w.(http.Flusher).Flush()
		<-next
		filler := "data: {\"choices\":[{\"delta\":{\"content\":\"" + strings.Repeat("x", 8<<10) + "\"}}]}\n\n"
		for range 512 { // 4 MiB: the proxy's writes to the gone agent fail
			io.WriteString(w, filler)
			w.(http.Flusher).Flush()
		}
		io.WriteString(w, "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":9}}\n\ndata: [DONE]\n\n")
		w.(http.Flusher).Flush()
		close(done)
	}))
	t.Cleanup(up.Close)
	return up
}

// An agent that hangs up mid-stream is still charged the usage the
// upstream reports at the end of it: the proxy reads on.
func TestHangUpStillCharged(t *testing.T) {
	next, done := make(chan struct{}), make(chan struct{})
	up := streamingUpstream(t, next, done)
	p := newTestProxy(t, up.URL, withLimits(resolve.Limits{UsageFormat: resolve.UsageOpenAI, MaxOutputTokens: 50, BudgetRemaining: new(int64(100000))}))
	sink := enginetest.New()
	rep := NewUsageReporter(sink, time.Hour, time.Second, p.srv.metrics, hclog.NewNullLogger())
	p.srv.usage = rep

	conn, err := net.Dial("tcp", strings.TrimPrefix(p.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	body := `{"model":"m","stream":true}`
	fmt.Fprintf(conn, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", p.token, len(body), body)
	br := bufio.NewReader(conn)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(line, `"hi"`) {
			break
		}
	}
	conn.Close() // the agent hangs up after the first chunk
	time.Sleep(50 * time.Millisecond)
	close(next)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream was not read to its end")
	}
	waitReported(t, rep, sink, resolve.UsageReport{InputTokens: 7, OutputTokens: 9, Settled: 1})
}

// cuttingUpstream answers a stream with usage chunks, then drops the
// connection before the stream's end.
func cuttingUpstream(t *testing.T, chunks string) *httptest.Server {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, chunks)
		w.(http.Flusher).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close() // no final chunk: the stream is cut
		}
	}))
	t.Cleanup(up.Close)
	return up
}

// A cut stream's usage is unknown: its running totals are not charged. Under
// a budget the rest of the budget is; under a cap only, the cap.
func TestCutStreamUnmeasured(t *testing.T) {
	gemini := "data: {\"candidates\":[],\"usageMetadata\":{\"promptTokenCount\":11,\"candidatesTokenCount\":2}}\r\n\r\n"
	for _, c := range []struct {
		name string
		l    resolve.Limits
		want resolve.UsageReport
	}{
		{"budget", resolve.Limits{UsageFormat: resolve.UsageGemini, MaxOutputTokens: 50, BudgetRemaining: new(int64(1000))},
			resolve.UsageReport{InputTokens: 11, OutputTokens: 989, Estimated: 1, Settled: 1}},
		{"cap", resolve.Limits{UsageFormat: resolve.UsageGemini, MaxOutputTokens: 50},
			resolve.UsageReport{InputTokens: 11, OutputTokens: 50, Estimated: 1}},
	} {
		t.Run(c.name, func(t *testing.T) {
			up := cuttingUpstream(t, gemini)
			p := newTestProxy(t, up.URL, withLimits(c.l))
			sink := enginetest.New()
			rep := NewUsageReporter(sink, time.Hour, time.Second, p.srv.metrics, hclog.NewNullLogger())
			p.srv.usage = rep
			req, _ := http.NewRequest("POST", p.url+"/v1beta/models/g:streamGenerateContent?alt=sse", strings.NewReader(`{}`))
			req.Header.Set("Authorization", "Bearer "+p.token)
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			waitReported(t, rep, sink, c.want)
		})
	}
}

// Counts are clamped to what the engine takes, and sums saturate there.
func TestUsageClamped(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"usage":{"prompt_tokens":9223372036854775807,"completion_tokens":1000000000000000}}`)
	}))
	t.Cleanup(up.Close)
	p := newTestProxy(t, up.URL, withLimits(resolve.Limits{UsageFormat: resolve.UsageOpenAI}))
	sink := enginetest.New()
	rep := NewUsageReporter(sink, time.Hour, time.Second, p.srv.metrics, hclog.NewNullLogger())
	p.srv.usage = rep
	for range 2 {
		if resp, body := p.post(t, "/v1/chat/completions", `{"model":"m"}`); resp.StatusCode != 200 {
			t.Fatalf("%d %s", resp.StatusCode, body)
		}
	}
	time.Sleep(50 * time.Millisecond)
	rep.Flush(t.Context())
	got := sink.Reported("pha_test")
	if got.InputTokens != resolve.MaxReportedTokens || got.OutputTokens != resolve.MaxReportedTokens {
		t.Fatalf("reported %+v", got)
	}
	for _, r := range sink.Reports() {
		if err := r.Check(); err != nil {
			t.Fatal(err)
		}
	}
}
