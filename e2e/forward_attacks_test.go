package e2e

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// tunnel is a raw CONNECT tunnel, for requests no well-behaved client sends.
type tunnel struct {
	conn net.Conn
	br   *bufio.Reader
}

// connectRequest is CONNECT target, with proxyToken as proxy credentials
// unless empty.
func connectRequest(target, proxyToken string) string {
	req := "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n"
	if proxyToken != "" {
		req += "Proxy-Authorization: Basic " + base64.StdEncoding.EncodeToString([]byte("phantom:"+proxyToken)) + "\r\n"
	}
	return req + "\r\n"
}

// openTunnel sends CONNECT target (with proxyToken as proxy credentials
// unless empty) and, on 200, starts TLS for the target's host, trusting
// Phantom's CA. It returns the CONNECT's status.
func (st *forwardStack) openTunnel(t *testing.T, target, proxyToken string) (*tunnel, int) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(st.fp.Forward, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(conn, connectRequest(target, proxyToken))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		return nil, resp.StatusCode
	}
	host, _, _ := net.SplitHostPort(target)
	tc := tls.Client(conn, &tls.Config{ServerName: host, RootCAs: st.caPool})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS in the tunnel to %s: %v", target, err)
	}
	return &tunnel{conn: tc, br: bufio.NewReader(tc)}, 200
}

// connectRefused sends CONNECT target (with proxyToken unless empty) and
// returns the refusal's status and body; a 200 fails the test.
func (st *forwardStack) connectRefused(t *testing.T, target, proxyToken string) (int, string) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(st.fp.Forward, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(conn, connectRequest(target, proxyToken))
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == 200 {
		t.Fatalf("CONNECT %s was accepted", target)
	}
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// get sends GET path with Host host (and token as Bearer unless empty)
// inside the tunnel and returns the answer.
func (tn *tunnel) get(t *testing.T, host, path, token string) (int, string) {
	t.Helper()
	if tn == nil {
		t.Fatal("no tunnel: its CONNECT was refused")
	}
	req := "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\n"
	if token != "" {
		req += "Authorization: Bearer " + token + "\r\n"
	}
	if _, err := io.WriteString(tn.conn, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(tn.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestForwardAttacks: no blind tunnels. Every way an agent could use the
// forward proxy to reach what its token does not name is refused, and the
// upstream it aimed at receives nothing (not even a TCP connection).
func TestForwardAttacks(t *testing.T) {
	st := startForwardStack(t, false)
	tokA, _ := st.v.Mint(t, "a", "ttl=1h")
	tokB, _ := st.v.Mint(t, "b", "ttl=1h")
	hostA := "api-a.phantom.test:" + st.a.Port
	hostB := "api-b.phantom.test:" + st.b.Port

	nothingReached := func(t *testing.T, apis ...*forwardAPI) {
		t.Helper()
		for _, api := range apis {
			if n := api.Connections(); n != 0 {
				t.Fatalf("%s (%s) received %d connections:\n%s", api.Name, api.Addr, n, api.log())
			}
		}
	}
	refused := func(t *testing.T, code int, body string, want int, reason string) {
		t.Helper()
		if code != want || !strings.Contains(body, `"reason":"`+reason+`"`) {
			t.Fatalf("got %d %s; want %d %s", code, body, want, reason)
		}
	}

	// The CONNECT itself is refused: no tunnel, no TLS, no byte anywhere.
	t.Run("a host no route names, refused at CONNECT", func(t *testing.T) {
		target := "evil.phantom.test:" + st.evil.Port
		code, body := st.connectRefused(t, target, tokA)
		refused(t, code, body, 403, "origin_not_allowed")
		code, body = st.connectRefused(t, target, "")
		refused(t, code, body, 403, "origin_not_allowed")
		nothingReached(t, st.evil)
	})
	t.Run("the right host on another port, refused at CONNECT", func(t *testing.T) {
		target := "api-a.phantom.test:" + st.aOther.Port
		code, body := st.connectRefused(t, target, tokA)
		refused(t, code, body, 403, "origin_not_allowed")
		code, body = st.connectRefused(t, target, "")
		refused(t, code, body, 403, "origin_not_allowed")
		nothingReached(t, st.aOther)
	})
	t.Run("a token for route A to route B's host, refused at CONNECT", func(t *testing.T) {
		code, body := st.connectRefused(t, hostB, tokA)
		refused(t, code, body, 403, "origin_not_allowed")
		// A tunnel to B without proxy credentials (route B names it), A's
		// token inside: refused per request.
		tn, _ := st.openTunnel(t, hostB, "")
		code, body = tn.get(t, hostB, "/v1/customers", tokA)
		refused(t, code, body, 403, "origin_not_allowed")
		// B's token inside a tunnel opened with A's: two tokens, 400.
		tn, _ = st.openTunnel(t, hostA, tokA)
		code, body = tn.get(t, hostA, "/v1/customers", tokB)
		refused(t, code, body, 400, "bad_request")
		nothingReached(t, st.a, st.b)
	})
	t.Run("a revoked token, refused at CONNECT", func(t *testing.T) {
		tok, lease := st.v.Mint(t, "a", "ttl=1h")
		st.v.MustCLI(t, "lease", "revoke", "-sync", lease)
		code, body := st.connectRefused(t, hostA, tok)
		refused(t, code, body, 407, "revoked")
		nothingReached(t, st.a)
	})
	t.Run("Host switching inside a tunnel", func(t *testing.T) {
		// A tunnel to A, a request inside it naming B, with A's token and
		// with B's: neither A nor B receives it.
		tn, _ := st.openTunnel(t, hostA, "")
		code, body := tn.get(t, hostB, "/v1/customers", tokA)
		refused(t, code, body, 403, "origin_not_allowed")
		tn, _ = st.openTunnel(t, hostA, "")
		code, body = tn.get(t, hostB, "/v1/customers", tokB)
		refused(t, code, body, 403, "origin_not_allowed")
		tn, _ = st.openTunnel(t, hostA, tokA)
		code, body = tn.get(t, "api-a.phantom.test:1", "/v1/customers", "")
		refused(t, code, body, 403, "origin_not_allowed")
		nothingReached(t, st.a, st.b)
	})
	t.Run("a tunnel with no token at all", func(t *testing.T) {
		tn, _ := st.openTunnel(t, hostA, "")
		code, body := tn.get(t, hostA, "/v1/customers", "")
		refused(t, code, body, 401, "unknown_token")
		// Proxy credentials that are not a phantom token: no tunnel.
		if _, code := st.openTunnel(t, hostA, "sk_live_notAphantomToken"); code != 407 {
			t.Fatalf("a real key as proxy credentials: CONNECT got %d", code)
		}
		nothingReached(t, st.a)
	})
	t.Run("plain HTTP inside a tunnel, and targets read two ways", func(t *testing.T) {
		conn, err := net.Dial("tcp", strings.TrimPrefix(st.fp.Forward, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\nGET /v1/customers HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n", hostA, hostA, hostA, tokA)
		raw, _ := io.ReadAll(conn)
		if !strings.Contains(string(raw), "HTTP/1.1 400 Bad Request") || !strings.Contains(string(raw), "https:// URLs through HTTPS_PROXY") {
			t.Fatalf("plain HTTP in a tunnel got:\n%s", raw)
		}
		for _, target := range []string{"127.1:" + st.a.Port, "0x7f000001:" + st.a.Port, "[::ffff:127.0.0.1]:" + st.a.Port, "api-a.phantom.test.:" + st.a.Port} {
			if _, code := st.openTunnel(t, target, tokA); code != 400 {
				t.Fatalf("CONNECT %s: %d", target, code)
			}
		}
		nothingReached(t, st.a)
	})
	t.Run("a route whose upstream has a base path", func(t *testing.T) {
		// In a tunnel the client sends the origin's own paths: adding the
		// base path would forward another path than the one resolved.
		st.v.MustCLI(t, "write", "phantom/routes/based", "upstream="+st.a.URL+"/v1",
			"allowed_paths=/**", "allowed_methods=GET", "credential="+realKey)
		tok, _ := st.v.Mint(t, "based", "ttl=1h")
		code, body := st.connectRefused(t, hostA, tok)
		refused(t, code, body, 403, "origin_not_allowed")
		// Inside a tunnel to A opened without proxy credentials, too.
		tn, _ := st.openTunnel(t, hostA, "")
		code, body = tn.get(t, hostA, "/customers", tok)
		refused(t, code, body, 403, "origin_not_allowed")
		nothingReached(t, st.a)
	})
	// Last: these reach A.
	t.Run("no proxy credentials, to an origin a route names", func(t *testing.T) {
		tn, code := st.openTunnel(t, hostA, "")
		if code != 200 {
			t.Fatalf("CONNECT %s without a token: %d", hostA, code)
		}
		if code, body := tn.get(t, hostA, "/v1/customers", tokA); code != 200 {
			t.Fatalf("a request with its token: %d %s", code, body)
		}
	})
	t.Run("a revoked token inside an open tunnel", func(t *testing.T) {
		tok, lease := st.v.Mint(t, "a", "ttl=1h")
		tn, _ := st.openTunnel(t, hostA, tok)
		if code, body := tn.get(t, hostA, "/v1/customers", ""); code != 200 {
			t.Fatalf("before revocation: %d %s", code, body)
		}
		before := st.a.Requests()
		st.v.MustCLI(t, "lease", "revoke", "-sync", lease)
		code, body := tn.get(t, hostA, "/v1/customers", "") // the same TLS connection
		refused(t, code, body, 401, "revoked")
		if st.a.Requests() != before {
			t.Fatal("a request with a revoked token reached the upstream")
		}
	})
	if log := st.a.log() + st.b.log(); strings.Contains(log, "phm_") {
		t.Fatalf("an upstream received a phantom token:\n%s", log)
	}

	// Every refusal is audited, CONNECTs included; no token is.
	audit, err := os.ReadFile(st.fp.AuditFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"method":"CONNECT","path":"evil.phantom.test:` + st.evil.Port + `","decision":"denied","reason":"origin_not_allowed","status":403`,
		`"method":"CONNECT","path":"` + hostB + `","decision":"denied","reason":"origin_not_allowed","status":403`,
		`"route":"a","method":"CONNECT","path":"` + hostA + `","decision":"denied","reason":"revoked","status":407`,
		`"route":"a","method":"CONNECT","path":"` + hostA + `","decision":"allowed"`,
		`"reason":"plain_http_in_tunnel"`, `"method":"CONNECT","path":"127.1:`,
		// A request inside a tunnel names its CONNECT's record.
		`"path":"/v1/customers","tunnel":"`} {
		if !strings.Contains(string(audit), want) {
			t.Errorf("the audit log lacks %s:\n%s", want, audit)
		}
	}
	if strings.Contains(string(audit), tokA) || strings.Contains(string(audit), tokB) {
		t.Fatal("the audit log holds a phantom token")
	}

	// SIGTERM drains: an open, idle tunnel is closed and the proxy exits.
	tn, _ := st.openTunnel(t, hostA, tokA)
	if code, body := tn.get(t, hostA, "/v1/customers", ""); code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	select {
	case <-st.fp.Terminate():
	case <-time.After(4 * time.Second):
		t.Fatalf("the proxy did not exit on SIGTERM with a tunnel open:\n%s", st.fp.Out)
	}
	if _, err := tn.br.ReadByte(); err == nil {
		t.Fatal("the tunnel is still open after the proxy exited")
	}
}

// TestForwardLimits: tunnels are held to the limits of the reverse listener,
// the per-client connection bound and the body stall timeout.
func TestForwardLimits(t *testing.T) {
	st := startForwardStack(t, false, "-max-connections-per-client=2", "-body-stall-timeout=1s")
	tok, _ := st.v.Mint(t, "a", "ttl=1h")
	hostA := "api-a.phantom.test:" + st.a.Port

	// A body that stops arriving inside a tunnel: 408, the tunnel closed.
	tn, _ := st.openTunnel(t, hostA, tok)
	fmt.Fprintf(tn.conn, "POST /v1/customers HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"a\":", hostA)
	start := time.Now()
	resp, err := http.ReadResponse(tn.br, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout || time.Since(start) > 5*time.Second {
		t.Fatalf("a stalled body in a tunnel: %d after %v; the proxy's output:\n%s", resp.StatusCode, time.Since(start), st.fp.Out)
	}

	// Two tunnels from one address are the most it may hold: a third
	// connection is closed at once.
	st.openTunnel(t, hostA, tok)
	st.openTunnel(t, hostA, tok)
	conn, err := net.Dial("tcp", strings.TrimPrefix(st.fp.Forward, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", hostA, hostA)
	// Closed with our CONNECT unread: EOF or a reset, never an answer.
	if b, err := io.ReadAll(conn); len(b) != 0 || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a third connection from one client got %q, %v", b, err)
	}
}
