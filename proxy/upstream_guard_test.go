package proxy

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/proxy/scrub"
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
		if wait, _ := l.take("192.0.2.1"); wait != 0 {
			t.Fatalf("limited after %d units, burst is 3", i)
		}
	}
	if wait, _ := l.take("192.0.2.1"); wait <= 0 || wait > time.Second {
		t.Fatalf("wait past the burst = %v, want (0, 1s]", wait)
	}
	// A token the engine allowed lately passes (the handler charges it
	// nothing): agents behind the same address as a garbage sender keep
	// working, until the engine finds the token dead.
	l.resolved(keyOf("phm_good"))
	if !l.recentlyAllowed(keyOf("phm_good")) {
		t.Fatal("a token the engine allowed is not remembered")
	}
	l.forget(keyOf("phm_good"))
	if l.recentlyAllowed(keyOf("phm_good")) {
		t.Fatal("a token found dead still passes")
	}
	if wait, _ := l.take("192.0.2.2"); wait != 0 {
		t.Fatal("another address was limited")
	}
	// One IPv6 /64 is one client.
	for range 3 {
		l.take("2001:db8::1")
	}
	if wait, _ := l.take("2001:db8::ffff"); wait == 0 {
		t.Fatal("another address of the same /64 was not limited")
	}
	disabled := newUnknownTokenLimit(-1, 3)
	if wait, _ := disabled.take("192.0.2.1"); wait != 0 || disabled.recentlyAllowed(keyOf("phm_x")) {
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
	scrub.New(g.Credential, scrub.Wire{Value: "Bearer " + g.Credential}).Header(h)
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

// TestDeadTokensAnsweredWithoutVault: a token the engine found dead for
// good (revoked, expired, used up, spent) is refused again with the same
// 401 and reason without a call: a dead token drives no load on Vault,
// and never looks transient (no 429), even when it was allowed a moment
// before.
func TestDeadTokensAnsweredWithoutVault(t *testing.T) {
	up, _ := recordingUpstream(t)
	p := newTestProxy(t, up.URL, nil)
	if resp, _ := get(t, p.url+"/v1/x", map[string]string{"Authorization": "Bearer " + p.token}); resp.StatusCode != 200 {
		t.Fatalf("allowed token: %d", resp.StatusCode)
	}
	p.engine.Deny(p.token, resolve.ReasonRevoked)
	before := len(p.engine.Resolves())
	for range 3 * DefaultUnknownTokenBurst {
		resp, body := get(t, p.url+"/v1/x", map[string]string{"Authorization": "Bearer " + p.token})
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(body, resolve.ReasonRevoked) {
			t.Fatalf("a revoked token got %d: %s", resp.StatusCode, body)
		}
	}
	if calls := len(p.engine.Resolves()) - before; calls != 1 {
		t.Fatalf("%d requests with a revoked token made %d calls to Vault, want 1", 3*DefaultUnknownTokenBurst, calls)
	}
	if last := p.auditLines(t); last[len(last)-1].Reason != resolve.ReasonRevoked || last[len(last)-1].Accessor == "" {
		t.Fatalf("the audit record of a refusal from memory: %+v", last[len(last)-1])
	}
	// A deleted route's tokens are dead for good (a route written again
	// has a new id they do not name).
	other := mintToken(t)
	p.engine.Deny(other, resolve.ReasonRouteDeleted)
	before = len(p.engine.Resolves())
	for range 3 {
		get(t, p.url+"/v1/x", map[string]string{"Authorization": "Bearer " + other})
	}
	if calls := len(p.engine.Resolves()) - before; calls != 1 {
		t.Fatalf("route_deleted was asked again (%d calls for 3 requests)", calls)
	}
	// A refusal that may change is asked again: an unknown token may be a
	// fresh one a lagging node has not seen yet.
	fresh := mintToken(t)
	before = len(p.engine.Resolves())
	for range 3 {
		get(t, p.url+"/v1/x", map[string]string{"Authorization": "Bearer " + fresh})
	}
	if calls := len(p.engine.Resolves()) - before; calls != 3 {
		t.Fatalf("unknown_token was answered from memory (%d calls for 3 requests)", calls)
	}
}

// TestTransportErrorsNeverLogTheKey: Go's transport errors quote what the
// upstream sent with %q (a NUL as \x00, a backslash doubled), so the key in
// UTF-16 or JSON-escaped in a malformed status line or header would reach
// the log in a form the scrubber does not read; the quoted part is read
// back and withheld.
func TestTransportErrorsNeverLogTheKey(t *testing.T) {
	utf16LE := func(s string) string {
		var b []byte
		for _, c := range []byte(s) {
			b = append(b, c, 0)
		}
		return string(b)
	}
	jsonEscaped := strings.NewReplacer("_", `\u005f`).Replace(realKey)
	for name, answer := range map[string]string{
		"UTF-16 status":       "HTTP/1.1 2" + utf16LE(realKey) + " OK\r\n\r\n",
		"UTF-16 header":       "HTTP/1.1 200 OK\r\nX-A: " + utf16LE(realKey) + "\x01\r\n\r\n",
		"JSON-escaped status": "HTTP/1.1 2" + jsonEscaped + " OK\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				conn, buf, err := http.NewResponseController(w).Hijack()
				if err != nil {
					t.Error(err)
					return
				}
				defer conn.Close()
				buf.WriteString(answer)
				buf.Flush()
			}))
			defer up.Close()
			p := newTestProxy(t, up.URL, nil)
			resp, _ := get(t, p.url+"/v1/x", map[string]string{"Authorization": "Bearer " + p.token})
			if resp.StatusCode != http.StatusBadGateway {
				t.Fatalf("status %d", resp.StatusCode)
			}
			logged := p.logs.String()
			if !strings.Contains(logged, "upstream request failed") {
				t.Fatalf("nothing logged: %s", logged)
			}
			for _, quoted := range []string{strconv.Quote(utf16LE(realKey)), strconv.Quote(jsonEscaped)} {
				if strings.Contains(logged, quoted[1:len(quoted)-1]) {
					t.Fatalf("the log holds the key as %%q writes it:\n%s", logged)
				}
			}
		})
	}
}

// TestForgedTokenBurstIsBounded: forged tokens sent at once from one address
// are charged before the engine is asked, so however many arrive together,
// at most the burst (and what refills meanwhile) reach it.
func TestForgedTokenBurstIsBounded(t *testing.T) {
	up, _ := recordingUpstream(t)
	p := newTestProxy(t, up.URL, nil)
	p.engine.SetDelay(50 * time.Millisecond) // answers come back after the burst arrived
	const n = 100
	var wg sync.WaitGroup
	statuses := make(chan int, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("GET", p.url+"/v1/x", nil)
			req.Header.Set("Authorization", "Bearer "+mintToken(t))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			statuses <- resp.StatusCode
		}()
	}
	wg.Wait()
	close(statuses)
	count := map[int]int{}
	for s := range statuses {
		count[s]++
	}
	if calls := len(p.engine.Resolves()); calls > DefaultUnknownTokenBurst+5 {
		t.Fatalf("%d forged tokens at once made %d calls to the engine (statuses %v)", n, calls, count)
	}
	if count[http.StatusTooManyRequests] == 0 {
		t.Fatalf("statuses %v: want 429s past the burst", count)
	}
}

// TestStolenTokenFromElsewhereIsBounded: a live token refused for the
// client's address (bound to others) keeps the unit it took and passes the
// limit no more, even though it was allowed a moment ago: a flood of it
// costs Vault at most the burst.
func TestStolenTokenFromElsewhereIsBounded(t *testing.T) {
	up, _ := recordingUpstream(t)
	p := newTestProxy(t, up.URL, nil)
	if resp, _ := get(t, p.url+"/v1/x", map[string]string{"Authorization": "Bearer " + p.token}); resp.StatusCode != 200 {
		t.Fatalf("allowed token: %d", resp.StatusCode)
	}
	p.engine.Deny(p.token, resolve.ReasonCIDRDenied)
	before := len(p.engine.Resolves())
	start := time.Now()
	limited := 0
	for range 3 * DefaultUnknownTokenBurst {
		resp, _ := get(t, p.url+"/v1/x", map[string]string{"Authorization": "Bearer " + p.token})
		switch resp.StatusCode {
		case http.StatusForbidden:
		case http.StatusTooManyRequests:
			limited++
		default:
			t.Fatalf("a token bound elsewhere got %d", resp.StatusCode)
		}
	}
	most := DefaultUnknownTokenBurst + int(time.Since(start).Seconds()*DefaultUnknownTokenRate) + 1
	if calls := len(p.engine.Resolves()) - before; calls > most || limited == 0 {
		t.Fatalf("%d requests with a token bound elsewhere made %d calls (%d limited), want at most %d",
			3*DefaultUnknownTokenBurst, calls, limited, most)
	}
}
