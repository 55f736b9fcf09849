package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/phantomvault/phantom/e2e/harness"
	"github.com/phantomvault/phantom/internal/testutil"
)

// The stand-in LLM APIs' real keys.
const (
	llmOpenAIKey    = "sk-proj-E2Eagents0openai0key0never0shown01"
	llmAnthropicKey = "sk-ant-api03-E2Eagents0anthropic0key0never0"
)

// needTool fails the test in CI and skips it elsewhere when a tool it needs
// (a client runtime, systemd-analyze) is missing, as err says: CI must never
// pass by skipping.
func needTool(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("test cannot run: %v", err)
	}
	t.Skipf("test skipped: %v", err)
}

// nodeAgents returns e2e/node, with node and the pinned SDKs installed there
// (.ci/run runs `npm ci` in it).
func nodeAgents(t *testing.T, tools *harness.Tools) string {
	t.Helper()
	dir := filepath.Join(tools.Root, "e2e", "node")
	if _, err := exec.LookPath("node"); err != nil {
		needTool(t, fmt.Errorf("node is not installed: %v", err))
	}
	for _, pkg := range []string{"openai", "@anthropic-ai/sdk"} {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", pkg, "package.json")); err != nil {
			needTool(t, fmt.Errorf("the npm package %s is not installed (cd e2e/node && npm ci): %v", pkg, err))
		}
	}
	return dir
}

// startLLMStandIn plays OpenAI's and Anthropic's APIs: each answers only
// with its real key in its place, streaming (SSE) when asked.
func startLLMStandIn(t *testing.T) *harness.Upstream {
	t.Helper()
	return harness.StartUpstream(t, http.HandlerFunc(serveLLM))
}

// llmLog is each request's credentials, target and body, to look for tokens.
func llmLog(u *harness.Upstream) string {
	var lines []string
	for _, r := range u.Requests() {
		lines = append(lines, r.Header.Get("Authorization")+" "+r.Header.Get("X-Api-Key")+" "+r.URI+" "+string(r.Body))
	}
	return strings.Join(lines, "\n")
}

func serveLLM(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var req struct{ Stream bool }
	json.Unmarshal(body, &req)
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.URL.Path == "/v1/chat/completions" && r.Header.Get("Authorization") == "Bearer "+llmOpenAIKey:
		if !req.Stream {
			io.WriteString(w, `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-5-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from OpenAI"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":3,"total_tokens":4}}`)
			return
		}
		chunk := `{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-5-mini","choices":[{"index":0,"delta":%s,"finish_reason":%s}]}`
		writeSSE(w, "",
			fmt.Sprintf(chunk, `{"role":"assistant","content":"Hello "}`, "null"),
			fmt.Sprintf(chunk, `{"content":"from "}`, "null"),
			fmt.Sprintf(chunk, `{"content":"OpenAI"}`, "null"),
			fmt.Sprintf(chunk, `{}`, `"stop"`),
			"[DONE]")
	case r.URL.Path == "/v1/messages" && r.Header.Get("X-Api-Key") == llmAnthropicKey && r.Header.Get("Anthropic-Version") != "":
		if !req.Stream {
			io.WriteString(w, `{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-4-5","content":[{"type":"text","text":"Hello from Anthropic"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":1,"output_tokens":3}}`)
			return
		}
		delta := `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":%q}}`
		writeSSE(w, "event: ",
			"message_start", `{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-4-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":1,"output_tokens":1}}}`,
			"content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`,
			"content_block_delta", fmt.Sprintf(delta, "Hello "),
			"content_block_delta", fmt.Sprintf(delta, "from "),
			"content_block_delta", fmt.Sprintf(delta, "Anthropic"),
			"content_block_stop", `{"type":"content_block_stop","index":0}`,
			"message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":3}}`,
			"message_stop", `{"type":"message_stop"}`)
	default:
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"error":{"type":"authentication_error","message":"invalid x-api-key"}}`)
	}
}

// writeSSE streams server-sent events, flushing each: data lines alone, or
// (with eventPrefix "event: ") name and data pairs.
func writeSSE(w http.ResponseWriter, eventPrefix string, items ...string) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	for i := 0; i < len(items); i++ {
		if eventPrefix != "" {
			fmt.Fprintf(w, "%s%s\n", eventPrefix, items[i])
			i++
		}
		fmt.Fprintf(w, "data: %s\n\n", items[i])
		w.(http.Flusher).Flush()
	}
}

// runNodeAgent runs one scenario of e2e/node/agents.mjs with the agent's
// environment (base URLs and keys) and decodes what it printed.
func runNodeAgent(t *testing.T, dir, scenario string, env ...string) map[string]any {
	t.Helper()
	cmd := exec.Command("node", "agents.mjs", scenario)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "NO_PROXY=*", "OPENAI_ORG_ID=", "OPENAI_PROJECT_ID=", "ANTHROPIC_AUTH_TOKEN=")
	cmd.Env = append(cmd.Env, env...)
	start := time.Now()
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("node agents.mjs %s: %v\n%s%s", scenario, err, out, stderr)
	}
	var res map[string]any
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("node agents.mjs %s printed %q: %v", scenario, out, err)
	}
	t.Logf("%s: %s (%v)", scenario, strings.TrimSpace(string(out)), time.Since(start).Round(time.Millisecond))
	return res
}

// auditCount counts the proxy's audit records of method and path that
// answered status (any status when 0).
func auditCount(t *testing.T, p *harness.Proxy, method, path string, status int) int {
	t.Helper()
	f, err := os.Open(p.AuditFile)
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var rec struct {
			Method, Path string
			Status       int
		}
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Method == method && rec.Path == path && (status == 0 || rec.Status == status) {
			n++
		}
	}
	return n
}

// settledAuditCount waits until the count of audit records stays put for
// a moment (the proxy writes each once it has answered) and returns it.
func settledAuditCount(t *testing.T, p *harness.Proxy, method, path string, status int) int {
	t.Helper()
	n := auditCount(t, p, method, path, status)
	for stable := 0; stable < 5; {
		time.Sleep(100 * time.Millisecond)
		if m := auditCount(t, p, method, path, status); m != n {
			n, stable = m, 0
		} else {
			stable++
		}
	}
	return n
}

// deadVaultProxy starts a proxy whose Vault does not answer: every agent
// request gets 503 phantom_unavailable, as during a Vault outage.
func deadVaultProxy(t *testing.T, v *harness.Vault) *harness.Proxy {
	t.Helper()
	dead := *v
	dead.Addr = fmt.Sprintf("http://127.0.0.1:%d", harness.FreePort(t))
	p := harness.LaunchProxy(t, &dead, nil)
	testutil.Eventually(t, 20*time.Second, func() bool {
		c, err := net.DialTimeout("tcp", strings.TrimPrefix(p.URL, "http://"), time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, "the proxy without Vault did not listen; its output:\n%s", p.Out)
	return p
}

// TestNodeAgents runs the official openai and @anthropic-ai/sdk npm
// packages, unchanged and configured only by base URL and key, through the
// real stack: calls and streams reach the stand-in API with the real key;
// the SDKs retry Phantom's 503 (Vault unavailable) as they do any 5xx, twice
// by default, and do not retry its 401 (a dead token).
func TestNodeAgents(t *testing.T) {
	tools := harness.Require(t)
	dir := nodeAgents(t, tools)
	v := harness.StartDevVault(t)
	api := startLLMStandIn(t)
	v.MustCLI(t, "write", "phantom/routes/openai", "upstream="+api.URL, "allowed_paths=/v1/chat/completions,/v1/models",
		"allowed_methods=GET,POST", "credential="+llmOpenAIKey, "token_prefix=sk-proj-")
	v.MustCLI(t, "write", "phantom/routes/anthropic", "upstream="+api.URL, "allowed_paths=/v1/messages", "allowed_methods=POST",
		"auth_type=header", "auth_header=x-api-key", "credential="+llmAnthropicKey)
	p := harness.StartProxy(t, v)
	openaiTok, openaiLease := v.Mint(t, "openai", "ttl=1h")
	anthropicTok, anthropicLease := v.Mint(t, "anthropic", "ttl=1h")
	openaiEnv := func(p *harness.Proxy) []string {
		return []string{"OPENAI_BASE_URL=" + p.URL + "/v1", "OPENAI_API_KEY=" + openaiTok}
	}
	anthropicEnv := func(p *harness.Proxy) []string {
		return []string{"ANTHROPIC_BASE_URL=" + p.URL, "ANTHROPIC_API_KEY=" + anthropicTok}
	}

	for _, c := range []struct {
		scenario, want string
		env            []string
		streamed       bool
	}{
		{"openai-chat", "Hello from OpenAI", openaiEnv(p), false},
		{"openai-stream", "Hello from OpenAI", openaiEnv(p), true},
		{"anthropic-message", "Hello from Anthropic", anthropicEnv(p), false},
		{"anthropic-stream", "Hello from Anthropic", anthropicEnv(p), true},
	} {
		res := runNodeAgent(t, dir, c.scenario, c.env...)
		if res["text"] != c.want {
			t.Errorf("%s: text %v, want %q", c.scenario, res["text"], c.want)
		}
		if chunks, _ := res["chunks"].(float64); c.streamed && chunks < 3 {
			t.Errorf("%s: %v chunks, want the stream's 3 or more", c.scenario, res["chunks"])
		}
	}
	if log := llmLog(api); strings.Contains(log, openaiTok) || strings.Contains(log, anthropicTok) {
		t.Fatalf("a phantom token reached the upstream:\n%s", log)
	}

	// Vault unavailable: Phantom answers 503 and each SDK retries it twice.
	dead := deadVaultProxy(t, v)
	for _, c := range []struct {
		scenario, method, path string
		env                    []string
	}{
		{"openai-error", "GET", "/v1/models", openaiEnv(dead)},
		{"anthropic-error", "POST", "/v1/messages", anthropicEnv(dead)},
	} {
		res := runNodeAgent(t, dir, c.scenario, c.env...)
		if res["status"] != float64(503) || res["type"] != "phantom_unavailable" {
			t.Errorf("%s without Vault: %v, want 503 phantom_unavailable", c.scenario, res)
		}
		if n := settledAuditCount(t, dead, c.method, c.path, 503); n != 3 {
			t.Errorf("%s without Vault: the proxy saw %d attempts, want 3 (the SDK's default 2 retries)", c.scenario, n)
		}
	}

	// A revoked token: 401, and neither SDK retries it.
	v.MustCLI(t, "lease", "revoke", "-sync", openaiLease)
	v.MustCLI(t, "lease", "revoke", "-sync", anthropicLease)
	for _, c := range []struct {
		scenario, method, path string
		env                    []string
	}{
		{"openai-error", "GET", "/v1/models", openaiEnv(p)},
		{"anthropic-error", "POST", "/v1/messages", anthropicEnv(p)},
	} {
		before := auditCount(t, p, c.method, c.path, 0)
		res := runNodeAgent(t, dir, c.scenario, c.env...)
		if res["status"] != float64(401) || res["error"] != "AuthenticationError" {
			t.Errorf("%s with a revoked token: %v, want 401 AuthenticationError", c.scenario, res)
		}
		if n := settledAuditCount(t, p, c.method, c.path, 0) - before; n != 1 {
			t.Errorf("%s with a revoked token: the proxy saw %d attempts, want 1 (no retry on 401)", c.scenario, n)
		}
	}
}
