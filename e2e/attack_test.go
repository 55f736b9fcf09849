package e2e

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/phantomvault/phantom/e2e/harness"
)

// startRecordingAPI accepts the real key and records every request it
// receives, body included, so tests can prove what was and was not
// forwarded.
func startRecordingAPI(t *testing.T) *harness.Upstream {
	t.Helper()
	return harness.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, `{"ok":true}`)
	}))
}

// rawExchange sends request bytes exactly as given and returns the status
// and every byte of the response.
func rawExchange(t *testing.T, addr, request string) (int, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.WriteString(c, request); err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(c)
	line, _, _ := strings.Cut(string(raw), "\r\n")
	parts := strings.Fields(line)
	if len(parts) < 2 {
		t.Fatalf("no HTTP response to %q: %q", request, raw)
	}
	status, _ := strconv.Atoi(parts[1])
	return status, string(raw)
}

func auditLines(t *testing.T, p *harness.Proxy) []map[string]any {
	t.Helper()
	raw, err := os.ReadFile(p.AuditFile)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for line := range strings.Lines(string(raw)) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("audit line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// TestRequestSideAttacks throws hostile requests at the real proxy binary.
// None may reach the upstream; each gets the status it deserves; each that
// reaches the proxy's handler leaves an audit line (requests that net/http's
// parser refuses first never reach it: those are checked for the 400/431 and
// the absence of forwarding).
func TestRequestSideAttacks(t *testing.T) {
	v := harness.StartDevVault(t)
	api := startRecordingAPI(t)
	v.MustCLI(t, "write", "phantom/routes/a", "upstream="+api.URL, "allowed_paths=/v1/customers/**", "allowed_methods=GET,POST,OPTIONS", "credential="+realKey)
	v.MustCLI(t, "write", "phantom/routes/b", "upstream="+api.URL, "allowed_paths=/v2/**", "allowed_methods=GET", "credential="+rotateKey)
	p := harness.StartProxy(t, v, "-max-body-bytes=1024")
	addr := strings.TrimPrefix(p.URL, "http://")
	tok, _ := v.Mint(t, "a")
	other, _ := v.Mint(t, "a")
	bound, _ := v.Mint(t, "a", "bound_cidrs=10.0.0.0/8")
	tampered := tok[:len(tok)-1] + map[bool]string{true: "0", false: "1"}[tok[len(tok)-1] != '0']

	req := func(target string, headers ...string) string {
		return "GET " + target + " HTTP/1.1\r\nHost: " + addr + "\r\nAuthorization: Bearer " + tok + "\r\n" +
			strings.Join(append(headers, ""), "\r\n") + "Connection: close\r\n\r\n"
	}
	big := strings.Repeat("a", 70<<10)
	cases := []struct {
		name    string
		request string
		status  int
		audited bool
	}{
		{"encoded slash", req("/v1/customers%2F..%2Fadmin"), 400, true},
		{"encoded slash, lower case", req("/v1/customers%2f..%2fadmin"), 400, true},
		{"encoded backslash", req("/v1/customers/%5C..%5Cadmin"), 400, true},
		{"encoded dots", req("/v1/customers/%2e%2e/admin"), 400, true},
		{"dot-dot segment", req("/v1/customers/../admin"), 400, true},
		{"dot segment", req("/v1/./customers"), 400, true},
		{"empty segment", req("/v1//customers"), 400, true},
		{"matrix parameter", req("/v1/customers;jsessionid=1"), 400, true},
		{"fragment", req("/v1/customers#x"), 400, true},
		{"trailing dot", req("/v1/customers./x"), 403, true},
		{"case variant", req("/V1/CUSTOMERS"), 403, true},
		{"raw non-ASCII", req("/v1/customers/caf\xc3\xa9"), 400, true},
		{"overlong UTF-8 dots", req("/v1/customers/%c0%ae%c0%ae/admin"), 400, true},
		{"encoded NUL", req("/v1/customers/%00"), 400, true},
		{"double-encoded dots", req("/v1/customers/%252e%252e/admin"), 400, true},
		{"absolute-form target", req("http://other.example/v1/customers"), 400, true},
		{"asterisk target", strings.Replace(req("*"), "GET", "OPTIONS", 1), 400, true},
		{"CONNECT", "CONNECT other.example:443 HTTP/1.1\r\nHost: other.example:443\r\nAuthorization: Bearer " + tok + "\r\n\r\n", 405, true},
		{"TRACE", strings.Replace(req("/v1/customers"), "GET", "TRACE", 1), 405, true},
		{"websocket upgrade", req("/v1/customers", "Upgrade: websocket", "Connection: Upgrade"), 400, true},
		{"spoofed X-Forwarded-For", strings.Replace(req("/v1/customers", "X-Forwarded-For: 10.1.2.3", "Forwarded: for=10.1.2.3", "X-Real-Ip: 10.1.2.3"), tok, bound, 1), 403, true},
		{"token of route a on route b", req("/v2/anything"), 403, true},
		{"tampered checksum", strings.Replace(req("/v1/customers"), tok, tampered, 1), 401, true},
		{"two different tokens", req("/v1/customers", "X-Api-Key: "+other), 400, true},
		{"a real key instead of a token", strings.Replace(req("/v1/customers"), tok, realKey, 1), 401, true},
		{"oversized body", strings.Replace(req("/v1/customers", "Content-Length: 2048"), "GET", "POST", 1) + strings.Repeat("x", 2048), 413, true},
		{"bare CR in a header", req("/v1/customers", "X-A: a\rb"), 400, false},
		{"NUL in a header", req("/v1/customers", "X-A: a\x00b"), 400, false},
		{"duplicate Host", req("/v1/customers", "Host: other.example"), 400, false},
		{"oversized headers", req("/v1/customers", "X-Big: "+big), 431, false},
		{"oversized query", req("/v1/customers?q=" + big), 431, false},
		{"raw NUL in the target", req("/v1/customers/\x00"), 400, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			forwarded, audited := api.Count(), len(auditLines(t, p))
			status, resp := rawExchange(t, addr, c.request)
			if status != c.status {
				t.Fatalf("status %d, want %d:\n%s", status, c.status, resp)
			}
			if api.Count() != forwarded {
				t.Fatal("the request reached the upstream")
			}
			if c.audited {
				lines := auditLines(t, p)
				if len(lines) != audited+1 {
					t.Fatalf("%d new audit lines, want 1", len(lines)-audited)
				}
				last := lines[len(lines)-1]
				if last["status"] != float64(c.status) || !strings.HasPrefix(last["client_addr"].(string), "127.0.0.1:") {
					t.Fatalf("audit line %v", last)
				}
			}
		})
	}

	// Content-Length with Transfer-Encoding: net/http lets chunked framing
	// win and drops Content-Length before the handler sees it (RFC 9112
	// 6.3), and the proxy re-frames what it forwards. So a request smuggled
	// behind the body is parsed as a request of its own and must pass every
	// check itself: without a token, it gets 401 and goes nowhere.
	t.Run("request smuggling with Content-Length and Transfer-Encoding", func(t *testing.T) {
		before := api.Count()
		smuggled := "GET /v1/customers/smuggled HTTP/1.1\r\nHost: " + addr + "\r\nConnection: close\r\n\r\n"
		first := "POST /v1/customers HTTP/1.1\r\nHost: " + addr + "\r\nAuthorization: Bearer " + tok +
			"\r\nContent-Length: " + strconv.Itoa(5+len(smuggled)) + "\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
		_, resp := rawExchange(t, addr, first+smuggled)
		if got := strings.Count(resp, "HTTP/1.1 "); got != 2 || !strings.Contains(resp, "HTTP/1.1 401") {
			t.Fatalf("want the smuggled request answered on its own with 401:\n%s", resp)
		}
		if api.Count() != before+1 || strings.Contains(api.Log(), "smuggled") {
			t.Fatalf("the smuggled request reached the upstream:\n%s", api.Log())
		}
	})

	// Hop-by-hop tricks cannot strip the injected key, and the allowed
	// request that shows it still carries no phantom token upstream.
	status, resp := rawExchange(t, addr, req("/v1/customers/cus_1", "Connection: Authorization, X-Api-Key", "Keep-Alive: Authorization"))
	if status != 200 {
		t.Fatalf("Connection: Authorization: %d\n%s", status, resp)
	}
	seen := api.Log()
	if !strings.Contains(seen, "Authorization: Bearer "+realKey) {
		t.Fatalf("the injected key was stripped:\n%s", seen)
	}
	for _, secret := range []string{tok, other, bound, tampered} {
		if strings.Contains(seen, secret) {
			t.Fatal("a phantom token reached the upstream")
		}
	}
	audit, _ := os.ReadFile(p.AuditFile)
	for name, text := range map[string]string{"audit log": string(audit), "proxy output": p.Out.String()} {
		for _, secret := range []string{tok, other, bound, realKey, rotateKey} {
			if strings.Contains(text, secret) {
				t.Errorf("the %s holds a secret", name)
			}
		}
		if strings.Contains(text, "10.1.2.3") {
			t.Errorf("the %s trusted a spoofed forwarding header", name)
		}
	}
}

// hostileKey has characters that every encoding changes.
const hostileKey = "sk_live_H0stile/+=<>&\"key\\0123456789"

func keyForms(key string) map[string]string {
	return map[string]string{
		"raw":           key,
		"base64":        base64.StdEncoding.EncodeToString([]byte(key)),
		"base64 raw":    base64.RawStdEncoding.EncodeToString([]byte(key)),
		"base64 url":    base64.URLEncoding.EncodeToString([]byte(key)),
		"url-encoded":   url.QueryEscape(key),
		"path-escaped":  url.PathEscape(key),
		"json-escaped":  jsonEscaped(key, true),
		"json, no html": jsonEscaped(key, false),
		"bearer value":  "Bearer " + key,
		"basic of key:": base64.StdEncoding.EncodeToString([]byte(key + ":")),
	}
}

// hostileAPI echoes the real key back in every way an upstream could.
func hostileAPI(t *testing.T) *harness.Upstream {
	t.Helper()
	forms := keyForms(hostileKey)
	all := func() string {
		var b strings.Builder
		for name, f := range forms {
			fmt.Fprintf(&b, "%s=[%s]\n", name, f)
		}
		return b.String()
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/h/headers", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", "https://evil.example/cb?k="+forms["url-encoded"])
		w.Header().Set("Set-Cookie", "session="+forms["base64"]+"; Path=/")
		w.Header().Set("X-Echo", r.Header.Get("Authorization"))
		w.WriteHeader(http.StatusFound)
	})
	mux.HandleFunc("/h/json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"message": "Incorrect API key provided: " + hostileKey, "forms": forms}})
	})
	mux.HandleFunc("/h/html", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w, "<html><body><pre>Authorization: "+r.Header.Get("Authorization")+"\n"+all()+"</pre></body></html>")
	})
	mux.HandleFunc("/h/sse", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for _, f := range forms {
			for cut := 1; cut < len(f); cut += len(f) / 3 {
				io.WriteString(w, "data: "+f[:cut])
				w.(http.Flusher).Flush()
				time.Sleep(2 * time.Millisecond)
				io.WriteString(w, f[cut:]+"\n\n")
				w.(http.Flusher).Flush()
			}
		}
	})
	mux.HandleFunc("/h/gzip", func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
			t.Errorf("the proxy did not ask for gzip: %q", r.Header.Get("Accept-Encoding"))
		}
		w.Header().Set("Content-Encoding", "gzip")
		gz := gzip.NewWriter(w)
		io.WriteString(gz, all())
		gz.Close()
	})
	mux.HandleFunc("/h/trailer", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Debug")
		io.WriteString(w, "ok")
		w.(http.Flusher).Flush()
		w.Header().Set("X-Debug", forms["raw"])
	})
	return harness.StartUpstream(t, mux)
}

// TestResponseSideContainment: an upstream that echoes the real key in
// headers, JSON and HTML errors, SSE split across chunks, gzip, trailers and
// every encoding; not one byte of any form reaches the agent, the proxy's
// output or its audit log, and the phantom token never reaches the upstream.
func TestResponseSideContainment(t *testing.T) {
	v := harness.StartDevVault(t)
	rec := hostileAPI(t)
	v.MustCLI(t, "write", "phantom/routes/hostile", "upstream="+rec.URL, "allowed_paths=/h/*", "allowed_methods=GET", "credential="+hostileKey)
	p := harness.StartProxy(t, v)
	addr := strings.TrimPrefix(p.URL, "http://")
	tok, _ := v.Mint(t, "hostile")

	for _, path := range []string{"/h/headers", "/h/json", "/h/html", "/h/sse", "/h/gzip", "/h/trailer"} {
		t.Run(path, func(t *testing.T) {
			_, raw := rawExchange(t, addr, "GET "+path+" HTTP/1.1\r\nHost: "+addr+"\r\nAuthorization: Bearer "+tok+
				"\r\nAccept-Encoding: gzip, br\r\nConnection: close\r\n\r\n")
			// Every byte on the wire, and the body once de-chunked.
			resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(raw)), nil)
			if err != nil {
				t.Fatalf("unreadable response: %v", err)
			}
			body, _ := io.ReadAll(resp.Body)
			var trailer bytes.Buffer
			resp.Trailer.Write(&trailer)
			if resp.StatusCode >= 500 && path != "/h/html" {
				t.Fatalf("status %d:\n%s", resp.StatusCode, raw)
			}
			for name, form := range keyForms(hostileKey) {
				for where, text := range map[string]string{"wire": raw, "body": string(body), "trailer": trailer.String()} {
					if strings.Contains(text, form) {
						t.Errorf("the agent received the key (%s) in the %s:\n%s", name, where, text)
					}
				}
			}
			if !strings.Contains(raw, "****") {
				t.Errorf("nothing was masked; did the upstream echo?\n%s", raw)
			}
		})
	}
	audit, _ := os.ReadFile(p.AuditFile)
	for name, form := range keyForms(hostileKey) {
		if strings.Contains(string(audit), form) || strings.Contains(p.Out.String(), form) {
			t.Errorf("the proxy's audit log or output holds the key (%s)", name)
		}
	}
	if strings.Contains(rec.Log(), tok) {
		t.Error("the phantom token reached the upstream")
	}
}
