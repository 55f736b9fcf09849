package e2e

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/phantomvault/phantom/e2e/harness"
)

// TestLimitedBodyRefusals drives the body-side model and size checks
// through a real Vault, the real plugin and the real proxy: where the model
// that runs is not the one checked (a second models/ segment, '@' in a
// name, a model query parameter, an Azure deployment), a body in invalid
// UTF-8, and a body over -max-limited-body-bytes are refused before the
// upstream sees them; well-formed requests pass.
func TestLimitedBodyRefusals(t *testing.T) {
	v := harness.StartDevVault(t)
	up := startUpstream(t, realKey)
	p := harness.StartProxy(t, v, "-max-limited-body-bytes=4096", "-limited-body-memory=6000")
	usageRoute(t, v, "oai", up.URL, "/v1/**,/openai/**", "openai", "allowed_models=gpt-4o*")
	usageRoute(t, v, "gem", up.URL, "/v1beta/**", "gemini", "allowed_models=gemini-*-flash")
	oai, _ := v.Mint(t, "oai")
	gem, _ := v.Mint(t, "gem")

	post := func(t *testing.T, tok, path, body string) (int, string) {
		t.Helper()
		code, b, _ := p.Do(t, "POST", path, tok, body, harness.JSONBody)
		return code, b
	}
	for _, c := range []struct {
		name, tok, path, body string
		status                int
	}{
		{"allowed", oai, "/v1/chat/completions", `{"model":"gpt-4o-mini"}`, 200},
		{"gemini allowed", gem, "/v1beta/models/gemini-2.0-flash:generateContent", `{}`, 200},
		{"query model", oai, "/v1/chat/completions?Model=o1", `{"model":"gpt-4o-mini"}`, 400},
		{"azure deployment", oai, "/openai/deployments/o1-prod/chat/completions", `{"model":"gpt-4o"}`, 400},
		{"model with @", oai, "/v1/chat/completions", `{"model":"gpt-4o@o1"}`, 400},
		{"invalid UTF-8", oai, "/v1/chat/completions", "{\"model\":\"gpt-4o\",\"x\":\"\xff\"}", 400},
		{"body over the bound", oai, "/v1/chat/completions", `{"model":"gpt-4o","x":"` + strings.Repeat("a", 5000) + `"}`, 413},
		{"gemini second models segment", gem, "/v1beta/models/gemini-2.5-pro:generateContent/models/gemini-2.0-flash", `{}`, 400},
		{"gemini two models segments", gem, "/v1beta/models/gemini-2.5-pro/models/gemini-2.0-flash:generateContent", `{}`, 400},
		{"gemini name with @", gem, "/v1beta/models/gemini-2.0-flash@gemini-2.5-pro:generateContent", `{}`, 400},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := up.Count()
			code, body := post(t, c.tok, c.path, c.body)
			if code != c.status {
				t.Fatalf("%d, want %d: %s", code, c.status, body)
			}
			if c.status != 200 && up.Count() != before {
				t.Fatalf("a refused request reached the upstream: %d %s", code, body)
			}
			t.Logf("%d %.160s", code, body)
		})
	}

	// Two 3000-byte bodies do not fit in 6000 bytes with room for the cap:
	// while a slow client holds one, the next gets 503 with Retry-After, and
	// once it is done, the memory is back.
	t.Run("memory exhausted", func(t *testing.T) {
		body := `{"model":"gpt-4o","x":"` + strings.Repeat("a", 2970) + `"}`
		pr, pw := io.Pipe()
		slow, _ := http.NewRequest("POST", p.URL+"/v1/chat/completions", pr)
		slow.ContentLength = int64(len(body))
		slow.Header.Set("Authorization", "Bearer "+oai)
		slow.Header.Set("Content-Type", "application/json")
		done := make(chan int, 1)
		go func() {
			resp, err := http.DefaultClient.Do(slow)
			if err != nil {
				done <- 0
				return
			}
			resp.Body.Close()
			done <- resp.StatusCode
		}()
		pw.Write([]byte(body[:100]))
		var code int
		var got string
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if code, got = post(t, oai, "/v1/chat/completions", body); code != 200 {
				break
			}
		}
		if code != 503 || !strings.Contains(got, "retry later") {
			t.Fatalf("while another body is held: %d %s", code, got)
		}
		pw.Write([]byte(body[100:]))
		pw.Close()
		if status := <-done; status != 200 {
			t.Fatalf("the slow request: %d", status)
		}
		if code, got := post(t, oai, "/v1/chat/completions", body); code != 200 {
			t.Fatalf("after the slow request: %d %s", code, got)
		}
		// Refused bodies give their memory back too.
		refused := strings.Replace(body, "gpt-4o", "gpt-4o@o1", 1)
		for i := range 3 {
			if code, got := post(t, oai, "/v1/chat/completions", refused); code != 400 {
				t.Fatalf("refused body %d: %d %s", i+1, code, got)
			}
		}
		if code, got := post(t, oai, "/v1/chat/completions", body); code != 200 {
			t.Fatalf("after refused bodies: %d %s", code, got)
		}
	})
}
