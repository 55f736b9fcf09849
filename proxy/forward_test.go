package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/internal/testutil"
	"github.com/phantomvault/phantom/proxy/engine/enginetest"
)

// forwardFixture is a proxy with the forward listener in front of a TLS
// upstream pinned at upstream.test:443, and a client configured only with
// the proxy URL and the proxy's CA, as an agent would be.
type forwardFixture struct {
	p        *testProxy
	fwdAddr  string
	admin    string
	caPool   *x509.CertPool
	received atomic.Int64
	stop     func() error
	audit    string // the audit log's file
}

func newForwardFixture(t *testing.T) *forwardFixture {
	t.Helper()
	f := &forwardFixture{}
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.received.Add(1)
		if r.Header.Get("Authorization") != "Bearer "+realKey {
			w.WriteHeader(401)
			return
		}
		io.WriteString(w, "upstream saw "+r.Host+r.URL.RequestURI())
	}))
	up.StartTLS()
	t.Cleanup(up.Close)
	// httptest's certificate names example.com: the route's host.
	caFile := filepath.Join(t.TempDir(), "upstream-ca.pem")
	os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: up.Certificate().Raw}), 0o644)

	tok := mintToken(t)
	u, _ := url.Parse("https://example.com")
	g := &Grant{Route: "r", Accessor: "pha_test", Upstream: u, Credential: realKey,
		AuthType: "bearer", AuthName: "Authorization", AuthFormat: "Bearer {{credential}}", Headers: map[string]string{}}
	res := enginetest.New()
	res.Allow(tok, (*resolve.Grant)(g))
	logs := &testutil.LockedBuffer{}
	f.audit = filepath.Join(t.TempDir(), "audit.log")
	srv, err := NewServer(Config{VaultAddr: "http://unused", AuditFile: f.audit,
		ForwardCAGenerate: true, UpstreamCAFile: caFile,
		UpstreamResolve: []string{"example.com:443=" + up.Listener.Addr().String()}},
		res, testMetrics(t), hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Debug}), WithTunnelChecker(res))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	t.Cleanup(func() {
		if s := logs.String(); strings.Contains(s, tok) || strings.Contains(s, realKey) {
			t.Errorf("the proxy's log holds a secret:\n%s", s)
		}
	})
	f.p = &testProxy{engine: res, token: tok, srv: srv}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	adminLn, _ := net.Listen("tcp", "127.0.0.1:0")
	fwdLn, _ := net.Listen("tcp", "127.0.0.1:0")
	f.fwdAddr, f.admin = fwdLn.Addr().String(), "http://"+adminLn.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.ServeWithForward(ctx, ln, adminLn, fwdLn) }()
	var stopped bool
	var serveErr error
	f.stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			serveErr = <-served
		}
		return serveErr
	}
	t.Cleanup(func() { f.stop() })

	resp, err := http.Get(f.admin + "/ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	caPEM, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	f.caPool = x509.NewCertPool()
	if !f.caPool.AppendCertsFromPEM(caPEM) || strings.Contains(string(caPEM), "PRIVATE") {
		t.Fatalf("/ca.pem: %q", caPEM)
	}
	return f
}

// client goes through the forward proxy with creds as proxy credentials.
func (f *forwardFixture) client(creds string) *http.Client {
	pu := &url.URL{Scheme: "http", Host: f.fwdAddr}
	if creds != "" {
		pu.User = url.UserPassword("x", creds)
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		Proxy: http.ProxyURL(pu), TLSClientConfig: &tls.Config{RootCAs: f.caPool}, ForceAttemptHTTP2: true}}
}

func TestForwardTunnel(t *testing.T) {
	f := newForwardFixture(t)
	c := f.client(f.p.token)
	resp, err := c.Get("https://example.com/v1/customers?limit=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "upstream saw example.com/v1/customers?limit=1" || resp.Proto != "HTTP/1.1" {
		t.Fatalf("%s %d %s", resp.Proto, resp.StatusCode, body)
	}

	// Another origin through the same token: the CONNECT is refused
	// (TestForwardConnectChecked has the details), before any byte leaves.
	before := f.received.Load()
	for _, target := range []string{"https://example.org/v1/x", "https://example.com:8443/v1/x"} {
		if _, err = c.Get(target); err == nil || !strings.Contains(err.Error(), "Forbidden") {
			t.Fatalf("%s: %v", target, err)
		}
	}
	if f.received.Load() != before {
		t.Fatal("a request for another origin reached the upstream")
	}

	// No token anywhere: 401, nothing forwarded.
	resp, err = f.client("").Get("https://example.com/v1/customers")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 || f.received.Load() != before {
		t.Fatalf("no token: %d", resp.StatusCode)
	}

	// Proxy credentials that are not a phantom token: 407 on the CONNECT.
	_, err = f.client("sk_live_realkey").Get("https://example.com/v1/customers")
	if err == nil || !strings.Contains(err.Error(), "Proxy Authentication Required") {
		t.Fatalf("a real key as proxy credentials: %v", err)
	}
}

// rawConnect opens a CONNECT to target and returns the connection and the
// proxy's status line.
func rawConnect(t *testing.T, addr, target string) (net.Conn, *bufio.Reader, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(conn, "CONNECT "+target+" HTTP/1.1\r\nHost: "+target+"\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: "CONNECT"})
	if err != nil {
		t.Fatal(err)
	}
	return conn, br, resp.Status
}

func TestForwardTunnelRefusesWhatIsNotTLS(t *testing.T) {
	f := newForwardFixture(t)

	// Plain HTTP inside the tunnel: a clear 400, not a hang.
	conn, br, status := rawConnect(t, f.fwdAddr, "example.com:443")
	if status != "200 Connection established" {
		t.Fatal(status)
	}
	io.WriteString(conn, "GET /v1/customers HTTP/1.1\r\nHost: example.com\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 400 || !strings.Contains(string(body), "https:// URLs through HTTPS_PROXY") {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}

	// A TLS server name other than the CONNECT host: no handshake.
	conn, _, _ = rawConnect(t, f.fwdAddr, "example.com:443")
	tc := tls.Client(conn, &tls.Config{ServerName: "example.org", RootCAs: f.caPool})
	if err := tc.Handshake(); err == nil {
		t.Fatal("a handshake for another server name succeeded")
	}

	// Not a CONNECT, and CONNECT targets that could be read two ways.
	resp, err = http.Get("http://" + f.fwdAddr + "/v1/customers")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 400 {
		t.Fatalf("GET on the forward listener: %d", resp.StatusCode)
	}
	if _, _, status := rawConnect(t, f.fwdAddr, "127.1:443"); !strings.HasPrefix(status, "400") {
		t.Fatalf("CONNECT 127.1:443: %s", status)
	}
	// Proxy credentials that are not a phantom token: 407, JSON, a challenge.
	conn, err = net.Dial("tcp", f.fwdAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	io.WriteString(conn, "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nProxy-Authorization: Basic "+
		base64.StdEncoding.EncodeToString([]byte("x:sk_live_realkey"))+"\r\n\r\n")
	resp, err = http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: http.MethodConnect})
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	if resp.StatusCode != 407 || resp.Header.Get("Proxy-Authenticate") == "" || !strings.Contains(string(body), `"type":"phantom_unauthorized"`) {
		t.Fatalf("%d %v %s", resp.StatusCode, resp.Header, body)
	}
	if f.received.Load() != 0 {
		t.Fatal("the upstream received a request")
	}
}

func TestForwardShutdownClosesTunnels(t *testing.T) {
	f := newForwardFixture(t)
	c := f.client(f.p.token)
	resp, err := c.Get("https://example.com/v1/customers")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	// An idle tunnel (kept alive by the client) and a CONNECT whose client
	// never starts TLS must not hold the drain.
	rawConnect(t, f.fwdAddr, "example.com:443")
	start := time.Now()
	if err := f.stop(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("draining took %v", d)
	}
}

func TestForwardConfigValidate(t *testing.T) {
	base := Config{VaultAddr: "http://v", RoleIDFile: "r", SecretIDFile: "s"}
	for _, tc := range []struct {
		name string
		set  func(*Config)
		ok   bool
	}{
		{"generated", func(c *Config) { c.ForwardListenAddr = "127.0.0.1:8081"; c.ForwardCAGenerate = true }, true},
		{"files", func(c *Config) { c.ForwardListenAddr = "127.0.0.1:8081"; c.ForwardCACert, c.ForwardCAKey = "c", "k" }, true},
		{"no CA", func(c *Config) { c.ForwardListenAddr = "127.0.0.1:8081" }, false},
		{"cert without key", func(c *Config) { c.ForwardCACert = "c" }, false},
		{"both", func(c *Config) { c.ForwardCAGenerate = true; c.ForwardCACert, c.ForwardCAKey = "c", "k" }, false},
	} {
		c := base
		tc.set(&c)
		if err := c.Validate(); (err == nil) != tc.ok {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	if _, err := parseUpstreamResolve([]string{"api.example.com:443=localhost:443"}); err == nil {
		t.Error("-upstream-resolve took a name as the address")
	}
}
