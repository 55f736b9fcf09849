package proxy

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/phantomvault/phantom/internal/testutil"
)

func TestScrubsEchoedCredential(t *testing.T) {
	b64 := base64.StdEncoding.EncodeToString([]byte(realKey))
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Echo", "key="+realKey)
		w.Header().Set("Location", "https://example.com/cb?key="+url.QueryEscape(realKey))
		w.WriteHeader(http.StatusUnauthorized)
		flusher := w.(http.Flusher)
		half := len(realKey) / 2
		// Split across writes and flushes, so the proxy sees separate chunks.
		io.WriteString(w, `{"error":"Incorrect API key provided: `+realKey[:half])
		flusher.Flush()
		time.Sleep(20 * time.Millisecond)
		io.WriteString(w, realKey[half:]+`", "b64":"`+b64+`", "url":"`+url.QueryEscape(realKey)+`"}`)
	}))
	t.Cleanup(up.Close)
	p := newTestProxy(t, up.URL, nil)
	resp, body := get(t, p.url+"/v1/x", map[string]string{"Authorization": "Bearer " + p.token})
	if resp.StatusCode != 401 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	var all bytes.Buffer
	resp.Header.Write(&all)
	all.WriteString(body)
	for _, form := range []string{realKey, b64, url.QueryEscape(realKey), realKey[:20]} {
		if strings.Contains(all.String(), form) {
			t.Fatalf("the agent received the credential (%q):\n%s", form, all.String())
		}
	}
	if !strings.Contains(body, "Incorrect API key provided: ****") {
		t.Fatalf("body was not masked in place: %s", body)
	}
}

func TestScrubsGzipBodies(t *testing.T) {
	var acceptEncoding string
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		acceptEncoding = r.Header.Get("Accept-Encoding")
		w.Header().Set("Content-Encoding", "gzip")
		gz := gzip.NewWriter(w)
		io.WriteString(gz, "echo "+realKey)
		gz.Close()
	}))
	t.Cleanup(up.Close)
	p := newTestProxy(t, up.URL, nil)
	req, _ := http.NewRequest("GET", p.url+"/v1/x", nil)
	req.Header.Set("Authorization", "Bearer "+p.token)
	req.Header.Set("Accept-Encoding", "br")
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.Header.Get("Content-Encoding") != "" || string(body) != "echo "+strings.Repeat("*", len(realKey)) {
		t.Fatalf("encoding %q body %q (upstream was asked for %q)", resp.Header.Get("Content-Encoding"), body, acceptEncoding)
	}
}

func TestRefusesUnscrubbableEncodings(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Encoding", "br")
		w.Write([]byte("opaque"))
	}))
	t.Cleanup(up.Close)
	p := newTestProxy(t, up.URL, nil)
	resp, body := get(t, p.url+"/v1/x", map[string]string{"Authorization": "Bearer " + p.token})
	wantError(t, resp, body, 502, errUpstream)
}

func TestSSEStreamsUnbuffered(t *testing.T) {
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"delta\":\"hello\"}\n\n")
		w.(http.Flusher).Flush()
		<-release // the upstream is not finished until the client saw the first event
		io.WriteString(w, "data: [DONE]\n\n")
	}))
	t.Cleanup(up.Close)
	t.Cleanup(func() {
		select {
		case <-release:
		default:
			close(release)
		}
	})
	p := newTestProxy(t, up.URL, nil)
	req, _ := http.NewRequest("POST", p.url+"/v1/chat/completions", strings.NewReader(`{"stream":true}`))
	req.Header.Set("Authorization", "Bearer "+p.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := bufio.NewReader(resp.Body)
	first, err := lines.ReadString('\n')
	if err != nil || first != "data: {\"delta\":\"hello\"}\n" {
		t.Fatalf("first event %q, %v", first, err)
	}
	close(release)
	rest, _ := io.ReadAll(lines)
	if string(rest) != "\ndata: [DONE]\n\n" {
		t.Fatalf("rest %q", rest)
	}
}

func TestRedirectsAreNotFollowed(t *testing.T) {
	var hits int
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits++
		http.Redirect(w, r, "http://127.0.0.1:1/steal?k="+url.QueryEscape(realKey), http.StatusFound)
	}))
	t.Cleanup(up.Close)
	p := newTestProxy(t, up.URL, nil)
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ := http.NewRequest("GET", p.url+"/v1/x", nil)
	req.Header.Set("Authorization", "Bearer "+p.token)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || hits != 1 {
		t.Fatalf("status %d, upstream hits %d", resp.StatusCode, hits)
	}
	if loc := resp.Header.Get("Location"); strings.Contains(loc, url.QueryEscape(realKey)) {
		t.Fatalf("Location leaks the key: %s", loc)
	}
}

func TestUpstreamFailures(t *testing.T) {
	t.Run("down", func(t *testing.T) {
		up := httptest.NewServer(http.NotFoundHandler())
		addr := up.URL
		up.Close()
		p := newTestProxy(t, addr, func(g *Grant) {
			g.AuthType, g.AuthName, g.AuthFormat = "query", "key", "{{credential}}"
		})
		resp, body := get(t, p.url+"/v1/x", map[string]string{"Authorization": "Bearer " + p.token})
		wantError(t, resp, body, 502, errUpstream)
		if strings.Contains(body, "127.0.0.1") {
			t.Fatalf("upstream address leaked: %s", body)
		}
	})
	t.Run("slow", func(t *testing.T) {
		up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}))
		t.Cleanup(up.Close)
		p := newTestProxy(t, up.URL, nil)
		p.srv.upstream = newUpstreamTransport(Config{UpstreamTimeout: 100 * time.Millisecond, DialTimeout: time.Second})
		resp, body := get(t, p.url+"/v1/x", map[string]string{"Authorization": "Bearer " + p.token})
		wantError(t, resp, body, 504, errUpstreamTimeout)
	})
}

func TestBodyLimit(t *testing.T) {
	up, seen := recordingUpstream(t)
	p := newTestProxy(t, up.URL, nil)
	p.srv.cfg.MaxBodyBytes = 10
	req, _ := http.NewRequest("POST", p.url+"/v1/x", strings.NewReader(strings.Repeat("a", 11)))
	req.Header.Set("Authorization", "Bearer "+p.token)
	resp, body := do(t, req)
	wantError(t, resp, body, 413, errTooLarge)
	if seen.count() != 0 {
		t.Fatal("an oversized body was forwarded")
	}
}

func TestAuditRecords(t *testing.T) {
	up, _ := recordingUpstream(t)
	p := newTestProxy(t, up.URL, nil)
	denied := mintToken(t)
	p.engine.Deny(denied, "path_not_allowed")
	get(t, p.url+"/v1/ok?key2=v", map[string]string{"Authorization": "Bearer " + p.token})
	get(t, p.url+"/v1/no", map[string]string{"Authorization": "Bearer " + denied})
	get(t, p.url+"/v1/none", nil)

	testutil.Eventually(t, 5*time.Second, func() bool { return len(p.auditLines(t)) >= 3 }, "fewer than 3 audit lines after 5s")
	raw, _ := os.ReadFile(p.srv.cfg.AuditFile)
	for _, secret := range []string{p.token, denied, realKey} {
		if strings.Contains(string(raw), secret) {
			t.Fatalf("the audit log holds a secret:\n%s", raw)
		}
	}
	// A request's line is written just after its response.
	var recs []auditRecord
	testutil.Eventually(t, 5*time.Second, func() bool { recs = p.auditLines(t); return len(recs) >= 3 }, "fewer than 3 audit lines after 5s")
	if len(recs) != 3 {
		t.Fatalf("%d audit lines, want 3", len(recs))
	}
	ok := recs[0]
	if ok.Accessor != "pha_test" || ok.Route != "r" || ok.Decision != "allowed" || ok.Status != 200 || ok.UpstreamStatus != 200 ||
		ok.Path != "/v1/ok" || ok.Method != "GET" || ok.BytesOut != int64(len(`{"ok":true}`)) || ok.RequestID == "" || ok.ClientAddr == "" {
		t.Fatalf("allowed record %+v", ok)
	}
	if no := recs[1]; no.Decision != "denied" || no.Reason != "path_not_allowed" || no.Status != 403 || no.Accessor != "pha_denied" {
		t.Fatalf("denied record %+v", no)
	}
	if none := recs[2]; none.Status != 401 || none.Reason != "unknown_token" {
		t.Fatalf("no-token record %+v", none)
	}
}

func TestAdminEndpoints(t *testing.T) {
	up, _ := recordingUpstream(t)
	p := newTestProxy(t, up.URL, nil)
	get(t, p.url+"/v1/x", map[string]string{"Authorization": "Bearer " + p.token})
	admin := httptest.NewServer(p.srv.AdminHandler())
	t.Cleanup(admin.Close)

	if resp, _ := get(t, admin.URL+"/healthz", nil); resp.StatusCode != 200 {
		t.Fatalf("healthz %d", resp.StatusCode)
	}
	if resp, _ := get(t, admin.URL+"/readyz", nil); resp.StatusCode != 200 {
		t.Fatalf("readyz %d", resp.StatusCode)
	}
	p.engine.SetReady(false)
	if resp, _ := get(t, admin.URL+"/readyz", nil); resp.StatusCode != 503 {
		t.Fatalf("readyz when not ready %d", resp.StatusCode)
	}
	// pprof only when asked for.
	if resp, _ := get(t, admin.URL+"/debug/pprof/heap", nil); resp.StatusCode != 404 {
		t.Fatalf("pprof without -pprof: %d", resp.StatusCode)
	}
	p.srv.cfg.Pprof = true
	withPprof := httptest.NewServer(p.srv.AdminHandler())
	t.Cleanup(withPprof.Close)
	if resp, _ := get(t, withPprof.URL+"/debug/pprof/heap", nil); resp.StatusCode != 200 {
		t.Fatalf("pprof with -pprof: %d", resp.StatusCode)
	}
	var metrics string
	testutil.Eventually(t, 5*time.Second, func() bool { // counted just after the response
		_, metrics = get(t, admin.URL+"/metrics", nil)
		return strings.Contains(metrics, "phantom_proxy_requests_total{")
	}, "no request counted in /metrics after 5s")
	for _, want := range []string{`phantom_proxy_requests_total{decision="allowed",route="r",status="200"} 1`, "phantom_proxy_resolve_seconds", "phantom_proxy_upstream_seconds"} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q:\n%s", want, metrics)
		}
	}
}

func TestScrubsTrailers(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Debug")
		io.WriteString(w, "body")
		w.(http.Flusher).Flush()
		w.Header().Set("X-Debug", "used key "+realKey)
	}))
	t.Cleanup(up.Close)
	p := newTestProxy(t, up.URL, nil)
	resp, body := get(t, p.url+"/v1/x", map[string]string{"Authorization": "Bearer " + p.token})
	if body != "body" {
		t.Fatalf("body %q", body)
	}
	got := resp.Trailer.Get("X-Debug")
	if got == "" || strings.Contains(got, realKey) {
		t.Fatalf("trailer %q", got)
	}
}

// TestScrubsEarlierCredential: an exchanged route's grant names the access
// token its credential replaced, still good upstream; an upstream that
// replays it (an earlier request's header) hands the agent only asterisks.
func TestScrubsEarlierCredential(t *testing.T) {
	const earlier = "at_EARLIERaccessTOKENstillLIVE0001"
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-History", "Bearer "+earlier)
		io.WriteString(w, `{"history":["Bearer `+earlier+`", "`+base64.StdEncoding.EncodeToString([]byte(earlier))+`"]}`)
	}))
	t.Cleanup(up.Close)
	p := newTestProxy(t, up.URL, func(g *Grant) { g.Mask = []string{earlier} })
	resp, body := get(t, p.url+"/v1/x", map[string]string{"Authorization": "Bearer " + p.token})
	var all bytes.Buffer
	resp.Header.Write(&all)
	all.WriteString(body)
	for _, form := range []string{earlier, base64.StdEncoding.EncodeToString([]byte(earlier))} {
		if strings.Contains(all.String(), form) {
			t.Fatalf("the agent received the earlier token (%q):\n%s", form, all.String())
		}
	}
	if !strings.Contains(body, `"Bearer ****`) {
		t.Fatalf("not masked in place: %s", body)
	}
}
