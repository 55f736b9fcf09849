package proxy

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/internal/token"
	"github.com/phantomvault/phantom/proxy/engine/enginetest"
)

// connectStatus sends CONNECT target with proxyToken (none if empty) and
// returns the answer's status and body.
func connectStatus(t *testing.T, addr, target, proxyToken string) (*http.Response, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	req := "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n"
	if proxyToken != "" {
		req += "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("x:"+proxyToken)) + "\r\n"
	}
	io.WriteString(conn, req+"\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode == 200 {
		return resp, ""
	}
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// TestForwardConnectChecked: a CONNECT is answered only once the engine
// allowed its origin; each refusal comes before any byte goes anywhere,
// with the status a client reports clearly, and is audited.
func TestForwardConnectChecked(t *testing.T) {
	f := newForwardFixture(t)
	revoked := mintToken(t)
	f.p.engine.Deny(revoked, resolve.ReasonRevoked)

	for _, c := range []struct {
		name, target, token string
		status              int
		reason              string
	}{
		{"its route's origin", "example.com:443", f.p.token, 200, ""},
		{"an origin a route names, no token", "EXAMPLE.com:443", "", 200, ""},
		{"another host", "example.org:443", f.p.token, 403, resolve.ReasonOriginNotAllowed},
		{"another port", "example.com:8443", f.p.token, 403, resolve.ReasonOriginNotAllowed},
		{"no token, a host no route names", "example.org:443", "", 403, resolve.ReasonOriginNotAllowed},
		{"a revoked token", "example.com:443", revoked, 407, resolve.ReasonRevoked},
		{"an unknown token", "example.com:443", mintToken(t), 407, resolve.ReasonUnknownToken},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, body := connectStatus(t, f.fwdAddr, c.target, c.token)
			if resp.StatusCode != c.status || c.reason != "" && !strings.Contains(body, `"reason":"`+c.reason+`"`) {
				t.Fatalf("CONNECT %s: %d %s", c.target, resp.StatusCode, body)
			}
			if c.status == 407 && resp.Header.Get("Proxy-Authenticate") == "" {
				t.Fatal("a 407 without Proxy-Authenticate")
			}
		})
	}
	// A token with a DNS-safe prefix pasted as the host: refused, and never
	// recorded (folded to lower case, Redact would no longer know it).
	pasted, err := token.New(rand.Reader, "sk-")
	if err != nil {
		t.Fatal(err)
	}
	if resp, body := connectStatus(t, f.fwdAddr, pasted+":443", ""); resp.StatusCode != 400 || !strings.Contains(body, "holds a phantom token") {
		t.Fatalf("CONNECT <token>:443: %d %s", resp.StatusCode, body)
	}
	checks := f.p.engine.Tunnels()
	last := checks[len(checks)-1]
	second := checks[1]
	if second.Origin != "example.com:443" || second.Token != "" || last.ClientIP != "127.0.0.1" {
		t.Fatalf("the checker was asked %+v, %+v", second, last)
	}
	if f.received.Load() != 0 {
		t.Fatal("the upstream received a request")
	}

	// Vault unavailable: 503, fail closed.
	f.p.engine.Fail(errors.New("Vault is down"))
	resp, body := connectStatus(t, f.fwdAddr, "example.com:443", f.p.token)
	if resp.StatusCode != 503 || !strings.Contains(body, "vault_unavailable") {
		t.Fatalf("Vault down: %d %s", resp.StatusCode, body)
	}
	f.stop()
	audit := f.auditLog(t)
	for _, want := range []string{
		`"route":"r","method":"CONNECT","path":"example.com:443","decision":"allowed"`,
		`"method":"CONNECT","path":"example.org:443","decision":"denied","reason":"origin_not_allowed","status":403`,
		`"method":"CONNECT","path":"example.com:443","decision":"denied","reason":"revoked","status":407`,
		`"method":"CONNECT","path":"example.com:443","decision":"error","reason":"vault_unavailable","status":503`,
	} {
		if !strings.Contains(audit, want) {
			t.Errorf("the audit log lacks %s:\n%s", want, audit)
		}
	}
	if strings.Contains(audit, strings.ToLower(pasted)) || strings.Contains(audit, pasted) {
		t.Errorf("the audit log holds the token pasted as a CONNECT host:\n%s", audit)
	}
}

// TestForwardNeedsTunnelChecker: no forward listener without the CONNECT check.
func TestForwardNeedsTunnelChecker(t *testing.T) {
	srv, err := NewServer(Config{VaultAddr: "http://unused", AuditFile: t.TempDir() + "/audit.log", ForwardCAGenerate: true},
		enginetest.New(), testMetrics(t), hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	adminLn, _ := net.Listen("tcp", "127.0.0.1:0")
	fwdLn, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	defer adminLn.Close()
	defer fwdLn.Close()
	if err := srv.ServeWithForward(context.Background(), ln, adminLn, fwdLn); err == nil || !strings.Contains(err.Error(), "tunnel checker") {
		t.Fatalf("ServeWithForward without a tunnel checker: %v", err)
	}
}

// auditLog is what the fixture's proxy audited so far.
func (f *forwardFixture) auditLog(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(f.audit)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// A request inside a tunnel whose token's route leads to another origin is
// refused after the resolve: under a budget it is settled all the same, or
// the engine would hold its reservation.
func TestForwardOriginRefusalSettles(t *testing.T) {
	f := newForwardFixture(t)
	other := mintToken(t)
	u, _ := url.Parse("https://example.org")
	f.p.engine.Allow(other, &resolve.Grant{Route: "o", Accessor: "pha_test", Upstream: u, Credential: realKey,
		AuthType: "bearer", AuthName: "Authorization", AuthFormat: "Bearer {{credential}}", Headers: map[string]string{},
		Limits: &resolve.Limits{UsageFormat: resolve.UsageOpenAI, MaxOutputTokens: 10, BudgetRemaining: new(int64(100))}})
	sink := enginetest.New()
	rep := NewUsageReporter(sink, time.Hour, time.Second, f.p.srv.metrics, hclog.NewNullLogger())
	f.p.srv.usage = rep

	req, _ := http.NewRequest("POST", "https://example.com/v1/chat/completions", strings.NewReader(`{"model":"m"}`))
	req.Header.Set("Authorization", "Bearer "+other)
	resp, err := f.client("").Do(req) // a tunnel without a token, to an origin route r names
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 403 || !strings.Contains(string(body), resolve.ReasonOriginNotAllowed) || f.received.Load() != 0 {
		t.Fatalf("another route's token in the tunnel: %d %s", resp.StatusCode, body)
	}
	waitReported(t, rep, sink, resolve.UsageReport{Settled: 1})
}
