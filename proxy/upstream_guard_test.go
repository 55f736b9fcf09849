package proxy

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestReadableResponse(t *testing.T) {
	cases := []struct {
		name      string
		status    int
		encodings []string
		want      error
		decoded   bool
	}{
		{"plain", 200, nil, nil, false},
		{"identity", 200, []string{"identity"}, nil, false},
		{"gzip", 200, []string{"gzip"}, nil, true},
		{"gzip behind identity", 200, []string{"identity", "gzip"}, nil, true},
		{"gzip twice, in two values", 200, []string{"gzip", "gzip"}, errEncodedResponse, false},
		{"gzip twice, in one value", 200, []string{"gzip, gzip"}, errEncodedResponse, false},
		{"brotli", 200, []string{"identity, br"}, errEncodedResponse, false},
		{"partial content", 206, nil, errPartialResponse, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var body bytes.Buffer
			if c.decoded {
				zw := gzip.NewWriter(&body)
				io.WriteString(zw, "hello")
				zw.Close()
			}
			resp := &http.Response{StatusCode: c.status, Header: http.Header{}, Body: io.NopCloser(&body)}
			for _, e := range c.encodings {
				resp.Header.Add("Content-Encoding", e)
			}
			if got := readableResponse(resp); got != c.want {
				t.Fatalf("readableResponse = %v, want %v", got, c.want)
			}
			if c.decoded {
				got, err := io.ReadAll(resp.Body)
				if err != nil || string(got) != "hello" || resp.Header.Get("Content-Encoding") != "" {
					t.Fatalf("decoded %q, %v; Content-Encoding %q", got, err, resp.Header.Get("Content-Encoding"))
				}
			}
		})
	}
}

func TestRemoveNeverForwarded(t *testing.T) {
	h := http.Header{}
	for _, name := range []string{"Range", "if-range", "X-HTTP-Method-Override", "x-original-url", "X-Forwarded-Prefix"} {
		h.Set(name, "x")
	}
	// Underscore spellings, which Go does not canonicalise and CGI-style
	// servers read as the dashed names.
	h["X_http_method_override"] = []string{"DELETE"}
	h["X_Original_URL"] = []string{"/admin"}
	// Dots and spaces, which PHP also reads as '_'.
	h["X.HTTP.METHOD.OVERRIDE"] = []string{"DELETE"}
	h["X-HTTP-METHOD.OVERRIDE"] = []string{"DELETE"}
	h.Set("Content-Type", "application/json")
	removeNeverForwarded(h)
	if len(h) != 1 || h.Get("Content-Type") == "" {
		t.Fatalf("left %v, want only Content-Type", h)
	}
}

func TestOverrideParam(t *testing.T) {
	for q, want := range map[string]bool{
		"": false, "a=1": false, "_method=DELETE": true, "a=1&_METHOD=put": true,
		"%5Fmethod=DELETE": true, "_method": true, "method=x": false, "x=_method": false,
		"payment_method=pm_1": false, "q=%2F": false,
		// PHP reads these names as _method.
		".method=DELETE": true, "%2Emethod=DELETE": true, "%20_method=PUT": true, "[method=PUT": true,
		"rest_route=/wp/v2/users": true, "_url=/admin": true, "rest.route=/x": true,
		// PHP cuts names at NUL; Rack strips brackets; qs reads arrays.
		"_method%00x=DELETE": true, "rest_route%00=/wp/v2/users/1": true, "[_method]=DELETE": true, "_method[0]=DELETE": true,
	} {
		if _, got := overrideParam(q); got != want {
			t.Errorf("overrideParam(%q) = %v, want %v", q, got, want)
		}
	}
}

func TestUnknownTokenLimit(t *testing.T) {
	l := newUnknownTokenLimit(1, 3)
	for i := range 3 {
		if l.retryAfter("192.0.2.1", "phm_forged") != 0 {
			t.Fatalf("limited after %d refusals, burst is 3", i)
		}
		l.refused("192.0.2.1")
	}
	if wait := l.retryAfter("192.0.2.1", "phm_forged"); wait <= 0 || wait > time.Second {
		t.Fatalf("retryAfter past the burst = %v, want (0, 1s]", wait)
	}
	// A token the engine allowed lately still passes: agents behind the
	// same address as a garbage sender keep working.
	l.resolved("phm_good")
	if l.retryAfter("192.0.2.1", "phm_good") != 0 {
		t.Fatal("a recently allowed token was limited")
	}
	if l.retryAfter("192.0.2.2", "phm_forged") != 0 {
		t.Fatal("another address was limited")
	}
	// One IPv6 /64 is one client.
	for range 3 {
		l.refused("2001:db8::1")
	}
	if l.retryAfter("2001:db8::ffff", "phm_forged") == 0 {
		t.Fatal("another address of the same /64 was not limited")
	}
	if newUnknownTokenLimit(-1, 3).retryAfter("192.0.2.1", "phm_forged") != 0 {
		t.Fatal("a disabled limit limited")
	}
}

// A header whose name holds the credential, in any case, is dropped: its
// value can be masked, its name cannot.
func TestHeaderNamedAfterTheCredentialIsDropped(t *testing.T) {
	g := &Grant{Credential: "sk_live_NamedHeader0123456789", AuthType: "bearer", AuthName: "Authorization", AuthFormat: "Bearer {{credential}}"}
	h := http.Header{}
	h.Set("X-Sk_live_namedheader0123456789", "1")
	h.Set("X-Echo", "Bearer sk_live_NamedHeader0123456789")
	h.Set("Content-Type", "text/plain")
	newScrubberCache().forGrant(g).Header(h)
	if len(h) != 2 || h.Get("Content-Type") == "" || strings.Contains(h.Get("X-Echo"), "NamedHeader") {
		t.Fatalf("headers after scrubbing: %v", h)
	}
}

// TestUpstreamErrorsNeverLogTheKey: an upstream that ends a chunked body
// with a malformed trailer quoting the key makes ReverseProxy log a body
// copy error; the log keeps Go's words and withholds the quote
// (newTestProxy's cleanup fails the test if any log line holds the key).
func TestUpstreamErrorsNeverLogTheKey(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		key := r.Header.Get("Authorization")[len("Bearer "):]
		buf.WriteString("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: " + key + "\r\n" + key + "\r\n\r\n")
		buf.Flush()
		bufio.NewReader(conn).ReadByte() // until the proxy hangs up
	}))
	defer up.Close()
	p := newTestProxy(t, up.URL, nil)
	req, _ := http.NewRequest("GET", p.url+"/v1/x", nil)
	req.Header.Set("Authorization", "Bearer "+p.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err == nil || string(b) != "hello" {
		t.Fatalf("want hello and a cut body, got %q, %v", b, err)
	}
}

// TestDeadTokensAreLimited: a revoked (or expired, used-up, spent) token is
// no credential: from one address, after the unknown-token burst, requests
// with it are held back with 429 before they reach Vault, even when the
// token was allowed a moment before.
func TestDeadTokensAreLimited(t *testing.T) {
	up, _ := recordingUpstream(t)
	p := newTestProxy(t, up.URL, nil)
	if resp, _ := get(t, p.url+"/v1/x", map[string]string{"Authorization": "Bearer " + p.token}); resp.StatusCode != 200 {
		t.Fatalf("allowed token: %d", resp.StatusCode)
	}
	p.resolver.mu.Lock()
	p.resolver.deny[p.token] = "revoked"
	p.resolver.mu.Unlock()
	before := p.resolver.callCount()
	statuses := map[int]int{}
	for range 3 * DefaultUnknownTokenBurst {
		resp, body := get(t, p.url+"/v1/x", map[string]string{"Authorization": "Bearer " + p.token})
		io.WriteString(io.Discard, body)
		statuses[resp.StatusCode]++
	}
	// The burst, plus what refills during the test (1 per second).
	if calls := p.resolver.callCount() - before; calls > DefaultUnknownTokenBurst+5 {
		t.Fatalf("%d requests with a revoked token made %d calls to Vault (statuses %v)", 3*DefaultUnknownTokenBurst, calls, statuses)
	}
	if statuses[http.StatusTooManyRequests] == 0 || statuses[http.StatusUnauthorized] == 0 {
		t.Fatalf("statuses %v: want 401s, then 429s", statuses)
	}
}
