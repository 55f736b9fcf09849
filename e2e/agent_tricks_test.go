package e2e

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phantomvault/phantom/e2e/harness"
)

// echoingKey contains '/' and '+', as AWS and Azure keys do.
const echoingKey = "sk_live_Ech0es/Back+In=Pieces0123456789abcdef"

// echoAPI is an in-scope upstream that behaves as common servers do: it
// echoes the request headers (the injected key among them) as a file that
// honours Range, relays them in a 103 Early Hints, and obeys method and path
// override headers. It records what it was asked.
type echoAPI struct {
	*harness.Upstream
	mu     sync.Mutex
	bodies []string // request bodies /v1/upload received whole
}

func startEchoAPI(t *testing.T) *echoAPI {
	t.Helper()
	a := &echoAPI{}
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/echo", func(w http.ResponseWriter, r *http.Request) {
		var dump bytes.Buffer
		r.Header.Write(&dump)
		// http.ServeContent honours Range and If-Range, as file servers
		// and CDNs do.
		http.ServeContent(w, r, "echo.txt", time.Unix(0, 0), bytes.NewReader(dump.Bytes()))
	})
	mux.HandleFunc("/v1/always-partial", func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		half := auth[:len(auth)/2]
		w.Header().Set("Content-Range", fmt.Sprintf("bytes 0-%d/%d", len(half)-1, len(auth)))
		w.WriteHeader(http.StatusPartialContent)
		io.WriteString(w, half)
	})
	mux.HandleFunc("/v1/hints", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css?k="+strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")+">; rel=preload")
		w.Header().Set("X-Echo", r.Header.Get("Authorization"))
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		w.Header().Del("X-Echo")
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/v1/double-encoded", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("Content-Encoding", "identity")
		w.Header().Add("Content-Encoding", "gzip")
		gz := gzip.NewWriter(w)
		io.WriteString(gz, "Authorization: "+r.Header.Get("Authorization"))
		gz.Close()
	})
	mux.HandleFunc("/v1/gzip-twice", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("Content-Encoding", "gzip")
		w.Header().Add("Content-Encoding", "gzip")
		var inner bytes.Buffer
		gz := gzip.NewWriter(&inner)
		io.WriteString(gz, "Authorization: "+r.Header.Get("Authorization"))
		gz.Close()
		outer := gzip.NewWriter(w)
		outer.Write(inner.Bytes())
		outer.Close()
	})
	mux.HandleFunc("/v1/trailer-name", func(w http.ResponseWriter, r *http.Request) {
		name := "X-K-" + strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		w.Header().Set("Trailer", name)
		io.WriteString(w, "ok\n")
		w.Header().Set(name, "1")
	})
	mux.HandleFunc("/v1/upload", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err == nil {
			a.mu.Lock()
			a.bodies = append(a.bodies, string(body))
			a.mu.Unlock()
		}
		fmt.Fprintf(w, "read %d bytes, %v\n", len(body), err)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Method+" "+r.URL.Path+"\n")
	})
	a.Upstream = harness.StartUpstream(t, mux)
	return a
}

// last is the last request received, as text.
func (a *echoAPI) last() string {
	got := a.Requests()
	if len(got) == 0 {
		return ""
	}
	return got[len(got)-1].Dump()
}

// exchangeOn sends raw request bytes and returns every byte of the answer,
// 1xx responses included.
func exchangeOn(t *testing.T, addr, request string) string {
	t.Helper()
	_, raw := rawExchange(t, addr, request)
	return raw
}

// answeredAndClosed sends request bytes and returns the answer, failing
// unless the proxy both answers and closes the connection within 5 s: a
// connection left waiting for a body that never comes is what an attacker
// uses to exhaust the proxy.
func answeredAndClosed(t *testing.T, addr, request string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, request)
	raw, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("the proxy kept the connection open (%v) after answering %q", err, raw)
	}
	return string(raw)
}

// keyPieces are substrings of the key long enough to matter: any of them in
// an answer is a piece the agent could put together with others.
func keyPieces(key string) []string {
	var out []string
	for i := 0; i+8 <= len(key); i += 4 {
		out = append(out, key[i:i+8])
	}
	return out
}

func assertNoPiece(t *testing.T, what, answer, key string) {
	t.Helper()
	for _, p := range keyPieces(key) {
		if strings.Contains(answer, p) {
			t.Fatalf("%s: the answer holds %q, a piece of the key:\n%s", what, p, answer)
		}
	}
}

// TestAgentCannotSliceOrRedirect: an agent with an in-scope token cannot
// have an upstream return the injected key in pieces (Range, 206, 1xx
// headers, an encoding the scrubber cannot read), nor make it run another
// method or path than the one resolved (override headers and parameters,
// Unicode look-alikes of '.' and '/').
func TestAgentCannotSliceOrRedirect(t *testing.T) {
	v := harness.StartDevVault(t)
	api := startEchoAPI(t)
	v.MustCLI(t, "write", "phantom/routes/echo", "upstream="+api.URL, "allowed_paths=/v1/**", "allowed_methods=GET,POST", "credential="+echoingKey)
	p := harness.StartProxy(t, v)
	addr := strings.TrimPrefix(p.URL, "http://")
	tok, _ := v.Mint(t, "echo")
	get := func(target string, headers ...string) string {
		return "GET " + target + " HTTP/1.1\r\nHost: " + addr + "\r\nAuthorization: Bearer " + tok + "\r\n" +
			strings.Join(append(headers, ""), "\r\n") + "Connection: close\r\n\r\n"
	}

	t.Run("range requests never reach the upstream", func(t *testing.T) {
		// Without the proxy's help, ranges of 12 bytes walk the key out.
		for start := 0; start < 600; start += 12 {
			rng := fmt.Sprintf("Range: bytes=%d-%d", start, start+11)
			answer := exchangeOn(t, addr, get("/v1/echo", rng, `If-Range: "x"`, "Accept-Charset: utf-16"))
			if !strings.HasPrefix(answer, "HTTP/1.1 200 ") {
				t.Fatalf("with %s: %q", rng, answer)
			}
			if up := api.last(); strings.Contains(up, "Range") || strings.Contains(up, "Accept-Charset") {
				t.Fatalf("the upstream was sent a range or a charset:\n%s", up)
			}
			assertNoPiece(t, rng, answer, echoingKey)
		}
	})
	t.Run("a 206 from the upstream is never passed on", func(t *testing.T) {
		answer := exchangeOn(t, addr, get("/v1/always-partial"))
		if !strings.HasPrefix(answer, "HTTP/1.1 502 ") {
			t.Fatalf("want 502, got:\n%s", answer)
		}
		assertNoPiece(t, "206", answer, echoingKey)
	})
	t.Run("1xx response headers are scrubbed", func(t *testing.T) {
		answer := exchangeOn(t, addr, get("/v1/hints"))
		if !strings.HasPrefix(answer, "HTTP/1.1 103 ") || !strings.Contains(answer, "HTTP/1.1 200 ") {
			t.Fatalf("want a 103 then a 200:\n%s", answer)
		}
		if strings.Contains(answer, echoingKey) {
			t.Fatalf("a 103 carried the key to the agent:\n%s", answer)
		}
		// The final answer still names its audit record, once.
		_, final, _ := strings.Cut(answer, "HTTP/1.1 200 ")
		if n := strings.Count(strings.ToLower(final), "x-phantom-request-id:"); n != 1 {
			t.Fatalf("the 200 after a 103 has %d request ids:\n%s", n, answer)
		}
	})
	t.Run("every Content-Encoding value is checked", func(t *testing.T) {
		// "identity, gzip" is one layer of gzip: decoded, then scrubbed.
		answer := exchangeOn(t, addr, get("/v1/double-encoded"))
		if !strings.HasPrefix(answer, "HTTP/1.1 200 ") || strings.Contains(strings.ToLower(answer), "content-encoding") {
			t.Fatalf("identity then gzip: want 200, decoded:\n%s", answer)
		}
		assertNoPiece(t, "identity then gzip", answer, echoingKey)
		// Two layers: Go's transport would have removed one and both headers.
		answer = exchangeOn(t, addr, get("/v1/gzip-twice"))
		if !strings.HasPrefix(answer, "HTTP/1.1 502 ") {
			t.Fatalf("gzip twice: a body the proxy cannot read was passed on:\n%s", answer)
		}
	})
	t.Run("trailer names are scrubbed", func(t *testing.T) {
		answer := exchangeOn(t, addr, get("/v1/trailer-name"))
		if !strings.HasPrefix(answer, "HTTP/1.1 200 ") {
			t.Fatalf("want 200:\n%s", answer)
		}
		assertNoPiece(t, "trailer name", strings.ToLower(answer), strings.ToLower(echoingKey))
	})
	t.Run("a phantom token never travels in the path", func(t *testing.T) {
		before := api.Count()
		answer := exchangeOn(t, addr, get("/v1/bot"+tok+"/getMe"))
		if !strings.HasPrefix(answer, "HTTP/1.1 400 ") || api.Count() != before {
			t.Fatalf("a token in the path: %q", answer)
		}
		other, _ := v.Mint(t, "echo")
		if answer := exchangeOn(t, addr, get("/v1/x?access_token="+other)); !strings.HasPrefix(answer, "HTTP/1.1 400 ") || api.Count() != before {
			t.Fatalf("a second token in a query parameter the proxy does not read: %q", answer)
		}
		audit, err := os.ReadFile(p.AuditFile)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(audit), tok[len(tok)-20:]) || strings.Contains(string(audit), other[len(other)-20:]) {
			t.Fatal("the audit log holds a phantom token")
		}
	})
	t.Run("method and path overrides are not forwarded", func(t *testing.T) {
		overrides := []string{
			"X-HTTP-Method-Override: DELETE", "X-HTTP-Method: DELETE", "X-Method-Override: DELETE",
			"X-Original-Method: DELETE", "X-Original-URL: /admin", "X-Rewrite-URL: /admin",
			"X-Original-URI: /admin", "X-Envoy-Original-Path: /admin", "X-Forwarded-Prefix: /admin",
			"X-Forwarded-Path: /admin", "X-Forwarded-Uri: /admin",
			// Underscore spellings: CGI-style servers read them as the above.
			"X_HTTP_METHOD_OVERRIDE: DELETE", "X_Original_URL: /admin", "X_Rewrite_Url: /admin",
			// Dots, which PHP reads as '_' too.
			"X.HTTP.METHOD.OVERRIDE: DELETE",
		}
		answer := exchangeOn(t, addr, strings.Replace(get("/v1/thing", overrides...), "GET", "POST", 1))
		if !strings.HasPrefix(answer, "HTTP/1.1 200 ") {
			t.Fatalf("want 200:\n%s", answer)
		}
		up := strings.ToLower(api.last())
		for _, h := range overrides {
			name, _, _ := strings.Cut(strings.ToLower(h), ":")
			if strings.Contains(up, name+":") {
				t.Errorf("%s reached the upstream:\n%s", name, up)
			}
		}
		// In the body, as Rails, Express and Laravel read it.
		for contentType, body := range map[string]string{
			"application/x-www-form-urlencoded": "a=1&_method=DELETE",
			"multipart/form-data; boundary=XX":  "--XX\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--XX--\r\n",
			"application/json":                  `{"_method":"DELETE"}`,
			// As Rack, qs and PHP read names.
			"application/x-www-form-urlencoded; a=1": "[_method]=DELETE&_method%00x=DELETE",
			"application/x-www-form-urlencoded; b=2": "a=1&[_method]x=DELETE", // qs reads a leading bracket group
			"multipart/form-data; boundary=XyZ":      "--XyZ\r\nContent-ID: _method\r\n\r\nDELETE\r\n--XyZ--\r\n",
			"multipart/form-data; boundary=Folded":   "--Folded\r\nContent-Disposition: form-data;\r\n name='_method'\r\n\r\nDELETE\r\n--Folded--\r\n",
			"multipart/form-data; boundary=Escaped":  "--Escaped\r\nContent-Disposition: form-data; name=\"_\\method\"\r\n\r\nDELETE\r\n--Escaped--\r\n",
			"application/json; charset=utf-7":        `{+ACI-_method+ACI-:+ACI-DELETE+ACI-}`,
		} {
			answer = exchangeOn(t, addr, "POST /v1/upload HTTP/1.1\r\nHost: "+addr+"\r\nAuthorization: Bearer "+tok+
				"\r\nContent-Type: "+contentType+"\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\nConnection: close\r\n\r\n"+body)
			if !strings.HasPrefix(answer, "HTTP/1.1 400 ") {
				t.Fatalf("a %s body naming _method: %q", contentType, answer)
			}
		}
		// Shapes a framework reads but a strict parser would not.
		for name, headers := range map[string]string{
			"no Content-Type":                    "",
			"a Content-Type PHP cuts":            "Content-Type: application/x-www-form-urlencoded, text/plain\r\n",
			"two Content-Types":                  "Content-Type: text/plain\r\nContent-Type: application/x-www-form-urlencoded\r\n",
			"a gzip body (body-parser inflates)": "Content-Type: application/x-www-form-urlencoded\r\nContent-Encoding: gzip\r\n",
		} {
			body := "_method=DELETE"
			answer = exchangeOn(t, addr, "POST /v1/upload HTTP/1.1\r\nHost: "+addr+"\r\nAuthorization: Bearer "+tok+
				"\r\n"+headers+"Content-Length: "+strconv.Itoa(len(body))+"\r\nConnection: close\r\n\r\n"+body)
			if !strings.HasPrefix(answer, "HTTP/1.1 400 ") {
				t.Fatalf("%s, body naming _method: %q", name, answer)
			}
		}
		api.mu.Lock()
		bodies := strings.Join(api.bodies, "\n")
		api.mu.Unlock()
		if strings.Contains(bodies, "DELETE") {
			t.Fatalf("the upstream received a whole body naming _method: %q", bodies)
		}
		// The refused bodies above reached the upstream in part, whenever
		// its handler runs: look for the queries themselves, not a count.
		for _, query := range []string{"_method=DELETE", ".method=DELETE", "%2Emethod=DELETE", "rest_route=/wp/v2/users/1", "_url=/admin", "_method%00x=DELETE", "rest_route%00=/wp/v2/users/1", "_method%5B0%5D=DELETE"} {
			answer = exchangeOn(t, addr, strings.Replace(get("/v1/thing?"+query), "GET", "POST", 1))
			if !strings.HasPrefix(answer, "HTTP/1.1 400 ") {
				t.Fatalf("?%s was not refused:\n%s", query, answer)
			}
			if strings.Contains(api.Log(), "?"+query) {
				t.Fatalf("?%s reached the upstream", query)
			}
		}
	})
	t.Run("Unicode look-alikes of dots and slashes are refused", func(t *testing.T) {
		before := api.Count()
		for _, target := range []string{
			"/v1/x/%EF%BC%8E%EF%BC%8E/admin", // full-width "..", NFKC makes it ".."
			"/v1/x%EF%BC%8Fadmin",            // full-width '/'
			"/v1/x/%E2%80%A5/admin",          // TWO DOT LEADER
		} {
			if answer := exchangeOn(t, addr, get(target)); !strings.HasPrefix(answer, "HTTP/1.1 400 ") {
				t.Errorf("%s: want 400:\n%s", target, answer)
			}
		}
		if api.Count() != before {
			t.Fatal("a look-alike path reached the upstream")
		}
		// The engine applies the same rule to a resolve asked directly.
		out := v.JSON(t, "write", "phantom/resolve", "token="+tok, "method=GET", "path=/v1/x/%EF%BC%8E%EF%BC%8E/admin", "client_ip=127.0.0.1")
		if data, _ := out["data"].(map[string]any); data["allowed"] != false || data["reason"] != "bad_request" {
			t.Fatalf("the engine's resolve of a look-alike path: %v", out["data"])
		}
	})
}
