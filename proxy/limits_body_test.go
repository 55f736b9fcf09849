package proxy

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/proxy/metering"
)

// refusedBefore posts body to path and wants status, with the upstream
// never reached.
func (p *testProxy) wantRefused(t *testing.T, seen *seen, path, body string, status int) string {
	t.Helper()
	before := seen.count()
	resp, got := p.post(t, path, body)
	if resp.StatusCode != status {
		t.Fatalf("%s %.80q: status %d, want %d: %s", path, body, resp.StatusCode, status, got)
	}
	if seen.count() != before {
		t.Fatalf("%s %.80q: a refused request reached the upstream", path, body)
	}
	return got
}

func TestLimitedBodyModelRules(t *testing.T) {
	up, seen := recordingUpstream(t)
	p := newTestProxy(t, up.URL, withLimits(resolve.Limits{UsageFormat: resolve.UsageOpenAI,
		AllowedModels: []string{"gpt-4o*", "ft:gpt-4o-mini:*", "openai/gpt-4o"}}))
	for _, body := range []string{
		`{"model":"gpt-4o-2024-08-06"}`,
		`{"model":"ft:gpt-4o-mini:my-org:custom_suffix:9abc"}`,
		`{"model":"openai/gpt-4o"}`,
		`{"model":"gpt\u002d4o"}`, // escapes are read as JSON reads them
	} {
		if resp, got := p.post(t, "/v1/chat/completions", body); resp.StatusCode != 200 {
			t.Errorf("%s: %d %s", body, resp.StatusCode, got)
		}
	}
	if resp, got := p.post(t, "/v1/chat/completions?api-version=1&modelx=1", `{"model":"gpt-4o"}`); resp.StatusCode != 200 {
		t.Errorf("an unrelated query parameter: %d %s", resp.StatusCode, got)
	}
	for name, c := range map[string]struct{ path, body string }{
		"model with @":          {"/v1/chat/completions", `{"model":"gpt-4o@o1"}`},
		"model with a comma":    {"/v1/chat/completions", `{"model":"gpt-4o,o1"}`},
		"model with a space":    {"/v1/chat/completions", `{"model":"gpt-4o o1"}`},
		"model with a NUL":      {"/v1/chat/completions", `{"model":"gpt-4o\u0000"}`},
		"empty model":           {"/v1/chat/completions", `{"model":""}`},
		"null model":            {"/v1/chat/completions", `{"model":null}`},
		"model of 257 bytes":    {"/v1/chat/completions", `{"model":"gpt-4o` + strings.Repeat("a", 251) + `"}`},
		"huge model":            {"/v1/chat/completions", `{"model":"gpt-4o` + strings.Repeat("a", 1<<20) + `"}`},
		"invalid UTF-8 value":   {"/v1/chat/completions", "{\"model\":\"gpt-4o\",\"x\":\"\xff\"}"},
		"invalid UTF-8 key":     {"/v1/chat/completions", "{\"model\":\"gpt-4o\",\"\xc0\":1}"},
		"query model":           {"/v1/chat/completions?model=o1", `{"model":"gpt-4o"}`},
		"query model any case":  {"/v1/chat/completions?a=1&MODEL=o1", `{"model":"gpt-4o"}`},
		"query model escaped":   {"/v1/chat/completions?mo%64el=o1", `{"model":"gpt-4o"}`},
		"query model bad enc":   {"/v1/chat/completions?%zz=o1", `{"model":"gpt-4o"}`},
		"azure deployment":      {"/openai/deployments/o1-prod/chat/completions?api-version=2024-10-21", `{"model":"gpt-4o"}`},
		"azure deployment case": {"/openai/Deployments/o1-prod/chat/completions", `{"model":"gpt-4o"}`},
		"folded key":            {"/v1/chat/completions", `{"model":"gpt-4o","moder":"x","MODEL":"o1"}`},
		"kelvin-folded key":     {"/v1/chat/completions", `{"max_tokens":1,"max_to\u212aens":9}`},
		"folded key alone":      {"/v1/chat/completions", `{"MODEL":"gpt-4o"}`},
		"gemini path":           {"/v1beta/models/gemini-2.5-pro:generateContent", `{"model":"gpt-4o"}`},
		"bedrock path":          {"/model/anthropic.claude-3-opus/invoke", `{"model":"gpt-4o"}`},
		"vertex path":           {"/v1/projects/p/locations/l/publishers/anthropic/models/claude-3-opus:rawPredict", `{"model":"gpt-4o"}`},
		"path model any case":   {"/v1beta/Models/o1:generateContent", `{"model":"gpt-4o"}`},
	} {
		t.Run(name, func(t *testing.T) {
			p.wantRefused(t, seen, c.path, c.body, 400)
		})
	}
	// Without a model rule, a deployment's path is the operator's to scope.
	p.engine.Edit(p.token, func(g *resolve.Grant) {
		g.Limits = &resolve.Limits{UsageFormat: resolve.UsageOpenAI, MaxOutputTokens: 10}
	})
	if resp, got := p.post(t, "/openai/deployments/d/chat/completions?api-version=1", `{"model":"x"}`); resp.StatusCode != 200 {
		t.Errorf("a deployment under a cap only: %d %s", resp.StatusCode, got)
	}
}

// TestFallbackModelLists: the models a gateway runs when the body's own
// fails (OpenRouter's "models", LiteLLM's "fallbacks") are under the model
// rule too.
func TestFallbackModelLists(t *testing.T) {
	up, seen := recordingUpstream(t)
	p := newTestProxy(t, up.URL, withLimits(resolve.Limits{UsageFormat: resolve.UsageOpenAI, AllowedModels: []string{"gpt-4o*"}}))
	if resp, got := p.post(t, "/v1/chat/completions", `{"model":"gpt-4o","models":["gpt-4o-mini"],"fallbacks":["gpt-4o-2024-08-06"]}`); resp.StatusCode != 200 {
		t.Fatalf("allowed fallbacks: %d %s", resp.StatusCode, got)
	}
	for name, c := range map[string]struct {
		body   string
		status int
	}{
		"models":             {`{"model":"gpt-4o-mini","models":["openai/o1-pro"]}`, 403},
		"fallbacks":          {`{"model":"gpt-4o-mini","fallbacks":["gpt-4o","o1-pro"]}`, 403},
		"fallbacks of dicts": {`{"model":"gpt-4o-mini","fallbacks":[{"model":"o1-pro"}]}`, 400},
		"models not a list":  {`{"model":"gpt-4o-mini","models":"o1-pro"}`, 400},
		"models folded":      {`{"model":"gpt-4o-mini","Models":["o1-pro"]}`, 400},
	} {
		t.Run(name, func(t *testing.T) {
			p.wantRefused(t, seen, "/v1/chat/completions", c.body, c.status)
		})
	}
}

// A Gemini-style path with a query but no model in it passes.
func TestGeminiModelWithQuery(t *testing.T) {
	up, _ := recordingUpstream(t)
	p := newTestProxy(t, up.URL, withLimits(resolve.Limits{UsageFormat: resolve.UsageGemini, AllowedModels: []string{"gemini-*-flash"}}))
	if resp, body := p.post(t, "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", `{}`); resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}
}

// A body over -max-limited-body-bytes is refused with 413 before it is
// read, with or without a Content-Length; one that does not fit in what is
// left of -limited-body-memory gets 503 and Retry-After, and the memory
// comes back once the bodies are done.
func TestLimitedBodyMemoryBounds(t *testing.T) {
	up, seen := recordingUpstream(t)
	p := newTestProxy(t, up.URL, withLimits(resolve.Limits{UsageFormat: resolve.UsageOpenAI, MaxOutputTokens: 10}))
	p.srv.limitedBodies = newBodyMemory(1000, 1500, true)
	small := `{"model":"m","input":"` + strings.Repeat("a", 900) + `"}`
	large := `{"model":"m","input":"` + strings.Repeat("a", 1000) + `"}`
	if resp, body := p.post(t, "/v1/embeddings", small); resp.StatusCode != 200 {
		t.Fatalf("a body under the bound: %d %s", resp.StatusCode, body)
	}
	p.wantRefused(t, seen, "/v1/embeddings", large, 413)

	// Without a Content-Length (chunked).
	chunked := func(body string) *http.Response {
		req, _ := http.NewRequest("POST", p.url+"/v1/embeddings", io.MultiReader(strings.NewReader(body)))
		req.ContentLength = -1
		req.Header.Set("Authorization", "Bearer "+p.token)
		req.Header.Set("Content-Type", "application/json")
		resp, _ := do(t, req)
		return resp
	}
	if resp := chunked(small); resp.StatusCode != 200 {
		t.Fatalf("a chunked body under the bound: %d", resp.StatusCode)
	}
	if got := bodyOf(t, seen.last(t)); got != small {
		t.Fatalf("the chunked body went upstream as %.60q", got)
	}
	before := seen.count()
	if resp := chunked(large); resp.StatusCode != 413 || seen.count() != before {
		t.Fatalf("a chunked body over the bound: %d", resp.StatusCode)
	}

	// One body held while its client is slow takes the memory another needs.
	pr, pw := io.Pipe()
	slow, _ := http.NewRequest("POST", p.url+"/v1/embeddings", pr)
	slow.ContentLength = int64(len(small))
	slow.Header.Set("Authorization", "Bearer "+p.token)
	slow.Header.Set("Content-Type", "application/json")
	done := make(chan int, 1)
	go func() {
		resp, err := http.DefaultClient.Do(slow)
		if err != nil {
			done <- 0
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	pw.Write([]byte(small[:10]))
	var resp *http.Response
	var body string
	for deadline := time.Now().Add(10 * time.Second); ; {
		resp, body = p.post(t, "/v1/embeddings", small)
		if resp.StatusCode != 200 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	wantError(t, resp, body, 503, statusType[503])
	if resp.Header.Get("Retry-After") != "1" || !strings.Contains(body, "retry later") {
		t.Fatalf("503 without Retry-After 1: %q %s", resp.Header.Get("Retry-After"), body)
	}
	pw.Write([]byte(small[10:]))
	pw.Close()
	if status := <-done; status != 200 {
		t.Fatalf("the slow request: %d", status)
	}
	if resp, body := p.post(t, "/v1/embeddings", small); resp.StatusCode != 200 {
		t.Fatalf("after the slow request: %d %s", resp.StatusCode, body)
	}
	// Every reservation was given back: refused, chunked and forwarded alike.
	for deadline := time.Now().Add(2 * time.Second); !p.srv.limitedBodies.total.TryAcquire(1500 + metering.EditRoom); {
		if time.Now().After(deadline) {
			t.Fatal("limited-body memory was not released")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Reading and checking a limited body allocates about the body once, and
// the cap goes in without a copy.
func TestLimitedBodyAllocatesItsSizeOnce(t *testing.T) {
	const size = 8 << 20
	body := []byte(`{"model":"gpt-4o","messages":[{"role":"user","content":"` + strings.Repeat("x", size) + `"}],"stream":true}`)
	g := &Grant{Route: "r", Accessor: "a", Limits: &resolve.Limits{UsageFormat: resolve.UsageOpenAI,
		AllowedModels: []string{"gpt-4o"}, MaxOutputTokens: 100, BudgetRemaining: new(int64(1000))}}
	mem := newBodyMemory(DefaultMaxLimitedBodyBytes, DefaultLimitedBodyMemory, false)
	run := func() *exchange {
		req := httptest.NewRequest("POST", "/v1/chat/completions", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		ex := &exchange{grant: g, path: "/v1/chat/completions"}
		if ref := applyLimits(req, ex, mem); ref != nil {
			t.Fatalf("refused: %s", ref.message)
		}
		return ex
	}
	run()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	ex := run()
	runtime.ReadMemStats(&after)
	allocated := after.TotalAlloc - before.TotalAlloc
	t.Logf("a %d-byte body allocated %d bytes", len(body), allocated)
	if allocated > uint64(len(body))+64<<10 {
		t.Fatalf("a %d-byte body allocated %d bytes", len(body), allocated)
	}
	forwarded, _ := io.ReadAll(ex.held)
	defer ex.releaseHeldBody()

	// A model or a count too long to be one is refused before it is copied.
	for _, huge := range []string{
		`{"model":"` + strings.Repeat("m", size) + `"}`,
		`{"model":"gpt-4o","max_tokens":"` + strings.Repeat("9", size) + `"}`,
		`{"model":"gpt-4o","n":` + strings.Repeat("9", size) + `}`,
	} {
		runtime.GC()
		runtime.ReadMemStats(&before)
		req := httptest.NewRequest("POST", "/v1/chat/completions", strings.NewReader(huge))
		refused := &exchange{grant: g, path: "/v1/chat/completions"}
		ref := applyLimits(req, refused, mem)
		runtime.ReadMemStats(&after)
		refused.releaseHeldBody()
		if ref == nil || ref.status != 400 {
			t.Fatalf("%.30s...: %+v", huge, ref)
		}
		if allocated := after.TotalAlloc - before.TotalAlloc; allocated > uint64(len(huge))+64<<10 {
			t.Fatalf("a %d-byte body %.30s... allocated %d bytes", len(huge), huge, allocated)
		}
	}
	if !bytes.HasSuffix(forwarded, []byte(`"stream":true,"max_completion_tokens":100,"stream_options":{"include_usage":true}}`)) {
		t.Fatalf("forwarded ...%s", forwarded[len(forwarded)-120:])
	}
}

func TestLimitedBodyConfig(t *testing.T) {
	base := Config{VaultAddr: "http://v", RoleIDFile: "r", SecretIDFile: "s"}
	c := base.withDefaults()
	if c.MaxLimitedBodyBytes != DefaultMaxLimitedBodyBytes || c.LimitedBodyMemory != DefaultLimitedBodyMemory {
		t.Fatalf("defaults: %d %d", c.MaxLimitedBodyBytes, c.LimitedBodyMemory)
	}
	for _, bad := range []Config{
		{MaxLimitedBodyBytes: 2 << 20, LimitedBodyMemory: 1 << 20},
		{MaxLimitedBodyBytes: -1},
		{LimitedBodyMemory: -1},
	} {
		c := base
		c.MaxLimitedBodyBytes, c.LimitedBodyMemory = bad.MaxLimitedBodyBytes, bad.LimitedBodyMemory
		if c.Validate() == nil {
			t.Errorf("%d per request, %d in all: accepted", bad.MaxLimitedBodyBytes, bad.LimitedBodyMemory)
		}
	}
	// A per-request bound alone raises the total to hold one such body.
	big := base
	big.MaxLimitedBodyBytes = 512 << 20
	if c := big.withDefaults(); c.LimitedBodyMemory != 512<<20 || c.Validate() != nil {
		t.Fatalf("%d in all: %v", c.LimitedBodyMemory, c.Validate())
	}
}

// One client address holds a quarter of -limited-body-memory at most, so a
// client dripping large bodies cannot refuse everyone else's; behind a load
// balancer (no per-client limit) there is no share.
func TestLimitedBodyMemoryShare(t *testing.T) {
	a, b := clientKey("192.0.2.1"), clientKey("2001:db8::1")
	mem := newBodyMemory(1000, 8000, false) // a client's share: 2000 + metering.EditRoom
	held := 0
	for mem.acquire(a, 500) {
		held++
	}
	if held != 4 {
		t.Fatalf("one client held %d bodies of 500 out of 8000", held)
	}
	if !mem.acquire(b, 500) {
		t.Fatal("another client was refused while one held its share")
	}
	mem.release(a, 500)
	if !mem.acquire(a, 500) {
		t.Fatal("the share did not come back")
	}

	shared := newBodyMemory(1000, 8000, true)
	for i := range 16 {
		if !shared.acquire(a, 500) {
			t.Fatalf("behind a load balancer: body %d refused", i+1)
		}
	}
}
