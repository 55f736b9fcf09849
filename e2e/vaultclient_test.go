package e2e

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/phantomvault/phantom/e2e/harness"
	"github.com/phantomvault/phantom/internal/testutil"
)

// TestProxyRefusesUnverifiedVault: VAULT_SKIP_VERIFY in the proxy's
// environment does not get it to take credentials from a Vault it cannot
// verify: off loopback it refuses to start.
func TestProxyRefusesUnverifiedVault(t *testing.T) {
	out, err := harness.RunProxy(t, []string{"VAULT_SKIP_VERIFY=true"},
		"-vault-addr=https://vault.invalid:8200", "-role-id-file=role_id", "-secret-id-file=secret_id",
		"-listen=127.0.0.1:0", "-admin-listen=127.0.0.1:0")
	if err == nil || !strings.Contains(out, "VAULT_SKIP_VERIFY") || !strings.Contains(out, "not on loopback") {
		t.Fatalf("the proxy with TLS verification off: %v\n%s", err, out)
	}
}

// forwardProxy is an HTTP forward proxy on loopback that counts what it
// relays, as a corporate egress proxy named in VAULT_HTTP_PROXY would.
func forwardProxy(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	var relayed atomic.Int64
	fwd := harness.StartUpstream(t, &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		relayed.Add(1)
		r.Out.URL = r.In.URL // absolute-form: where the client wants to go
		r.Out.Host = r.In.URL.Host
		r.Out.Header.Del("Proxy-Authorization")
	}})
	return strings.TrimPrefix(fwd.URL, "http://"), &relayed
}

// TestProxyLogsHTTPProxyToVault: an HTTP proxy on the way to Vault (whose
// answers carry credentials) is named in the log, without its password.
func TestProxyLogsHTTPProxyToVault(t *testing.T) {
	v := harness.StartDevVault(t)
	upstreamRoute(t, v, "demo")
	addr, relayed := forwardProxy(t)
	p := harness.StartProxyEnv(t, v, []string{"VAULT_HTTP_PROXY=http://ops:pr0xy-pa55@" + addr})
	tok, _ := v.Mint(t, "demo")
	if code, body := p.Call(t, "GET", "/v1/customers", tok); code != 200 {
		t.Fatalf("through the HTTP proxy: %d %s", code, body)
	}
	if relayed.Load() == 0 {
		t.Fatal("nothing went through the HTTP proxy: the test proves nothing")
	}
	log := p.Out.String()
	if !strings.Contains(log, "reaching Vault through an HTTP proxy") || !strings.Contains(log, addr) {
		t.Fatalf("the log does not name the HTTP proxy:\n%s", log)
	}
	if strings.Contains(log, "pr0xy-pa55") {
		t.Fatalf("the log shows the HTTP proxy's password:\n%s", log)
	}
}

// TestWrappedSecretIDSubstituteRefused: someone who intercepted the proxy's
// wrapping token (and unwrapped it) hands the proxy a token they wrapped
// themselves. Its creation path gives it away: the proxy refuses it, says
// why and never logs in; the bootstrap's own wrapping token is accepted
// (TestProxyWrappedSecretIDAndTokenLifetime).
func TestWrappedSecretIDSubstituteRefused(t *testing.T) {
	v := harness.StartDevVault(t)
	secretID, err := os.ReadFile(v.SecretIDFile)
	if err != nil {
		t.Fatal(err)
	}
	substitute := v.MustCLI(t, "write", "-wrap-ttl=5m", "-field=wrapping_token", "sys/wrapping/wrap", "secret_id="+strings.TrimSpace(string(secretID)))
	dir := t.TempDir()
	file := filepath.Join(dir, "secret_id")
	if err := os.WriteFile(file, []byte(substitute), 0o600); err != nil {
		t.Fatal(err)
	}
	p := harness.LaunchProxy(t, v, nil, "-secret-id-file="+file, "-secret-id-wrapped")
	testutil.Eventually(t, 10*time.Second, func() bool {
		out := p.Out.String()
		return strings.Contains(out, "refusing the wrapped secret_id") && strings.Contains(out, "sys/wrapping/wrap") &&
			strings.Contains(out, "auth/approle/role/phantom-proxy/secret-id")
	}, "the substitute was not refused:\n%s", p.Out)
	if strings.Contains(p.Out.String(), "logged in to Vault") || harness.Status(p.Admin+"/readyz") == 200 {
		t.Fatalf("the proxy logged in with a substitute secret_id:\n%s", p.Out)
	}
	// The check only looked: the substitute is still unused.
	if _, errOut, err := v.RunAs(t, "", "table", "", "unwrap", substitute); err != nil {
		t.Fatalf("the proxy used up the wrapping token it refused: %s", errOut)
	}
}

// vaultFront sits between the proxy and a real Vault (Community Edition)
// and records the X-Vault-Forward header of each resolve call; its mode
// decides which Vault it plays.
type vaultFront struct {
	url string
	mu  sync.Mutex
	fwd []string // X-Vault-Forward of each resolve call, in order
}

type frontMode int

const (
	// frontForwarding plays a Vault Enterprise that allows forwarding by
	// header: it takes the header off, as the Vault behind would refuse it.
	frontForwarding frontMode = iota
	// frontCommunity passes everything: Vault Community Edition refuses the
	// header.
	frontCommunity
	// frontEnterpriseRefusing plays a Vault Enterprise without
	// allow_forwarding_via_header: the header is refused, and sys/health
	// says enterprise.
	frontEnterpriseRefusing
)

func startVaultFront(t *testing.T, v *harness.Vault, mode frontMode) *vaultFront {
	t.Helper()
	target, _ := url.Parse(v.Addr)
	f := &vaultFront{}
	f.url = harness.StartUpstream(t, &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			if strings.HasSuffix(r.In.URL.Path, "/resolve") {
				f.mu.Lock()
				f.fwd = append(f.fwd, r.In.Header.Get("X-Vault-Forward"))
				f.mu.Unlock()
			}
			if mode == frontForwarding {
				r.Out.Header.Del("X-Vault-Forward")
			}
		},
		ModifyResponse: func(resp *http.Response) error {
			if mode != frontEnterpriseRefusing || resp.Request.URL.Path != "/v1/sys/health" {
				return nil
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = []byte(strings.Replace(string(body), `"enterprise":false`, `"enterprise":true`, 1))
			resp.Body, resp.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
			resp.Header.Del("Content-Length")
			return err
		},
	}).URL
	return f
}

func (f *vaultFront) forwards() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.fwd...)
}

// TestResolveAsksForActiveNode: every resolve call asks Vault to run it on
// the active node (X-Vault-Forward: active-node), where a revocation is
// known the moment it returns; a performance standby would answer from
// storage that may lag it. Vault Community Edition refuses the header (and
// needs none: its standbys forward everything): there the proxy keeps
// serving without it. Vault Enterprise refuses it unless configured to
// allow it, and there the proxy fails closed and says what to change.
func TestResolveAsksForActiveNode(t *testing.T) {
	v := harness.StartDevVault(t)
	up := upstreamRoute(t, v, "demo")

	t.Run("forwarding allowed", func(t *testing.T) {
		front := startVaultFront(t, v, frontForwarding)
		p := harness.StartProxy(t, v, "-vault-addr="+front.url)
		tok, leaseID := v.Mint(t, "demo")
		for range 3 {
			if code, body := p.Call(t, "GET", "/v1/customers", tok); code != 200 {
				t.Fatalf("%d %s", code, body)
			}
		}
		v.MustCLI(t, "lease", "revoke", "-sync", leaseID)
		if code, _ := p.Call(t, "GET", "/v1/customers", tok); code != 401 {
			t.Fatalf("after revocation: %d", code)
		}
		got := front.forwards()
		if len(got) != 4 {
			t.Fatalf("%d resolve calls for 4 requests", len(got))
		}
		for i, h := range got {
			if h != "active-node" {
				t.Fatalf("resolve call %d: X-Vault-Forward %q, want active-node", i, h)
			}
		}
	})
	t.Run("community edition", func(t *testing.T) {
		front := startVaultFront(t, v, frontCommunity)
		p := harness.StartProxy(t, v, "-vault-addr="+front.url)
		tok, _ := v.Mint(t, "demo")
		for range 2 {
			if code, body := p.Call(t, "GET", "/v1/customers", tok); code != 200 {
				t.Fatalf("%d %s\n%s", code, body, p.Out)
			}
		}
		if got := front.forwards(); len(got) != 3 || got[0] != "active-node" || got[1] != "" || got[2] != "" {
			t.Fatalf("X-Vault-Forward of the resolve calls: %q, want one refused, then none", got)
		}
		if !strings.Contains(p.Out.String(), "Community Edition refuses X-Vault-Forward") {
			t.Fatalf("the log does not say why the header was dropped:\n%s", p.Out)
		}
	})
	t.Run("enterprise refusing the header", func(t *testing.T) {
		front := startVaultFront(t, v, frontEnterpriseRefusing)
		p := harness.StartProxy(t, v, "-vault-addr="+front.url)
		tok, _ := v.Mint(t, "demo")
		forwarded := up.log()
		for range 2 {
			if code, body := p.Call(t, "GET", "/v1/customers", tok); code != 503 || !strings.Contains(body, "phantom_unavailable") {
				t.Fatalf("%d %s", code, body)
			}
		}
		if up.log() != forwarded {
			t.Fatal("forwarded without asking the active node")
		}
		for i, h := range front.forwards() {
			if h != "active-node" {
				t.Fatalf("resolve call %d went without the header", i)
			}
		}
		if !strings.Contains(p.Out.String(), "allow_forwarding_via_header") {
			t.Fatalf("the log does not say what to change:\n%s", p.Out)
		}
	})
}

// TestWrappedSecretIDFileKept: with -secret-id-wrapped and the file left in
// place, the proxy logs in again when its token ends, from the secret_id it
// unwrapped, instead of trying the used-up wrapping token again.
func TestWrappedSecretIDFileKept(t *testing.T) {
	v := harness.StartDevVault(t)
	upstreamRoute(t, v, "demo")
	v.Bootstrap(t, "PHANTOM_SECRET_ID_WRAP_TTL=5m", "PHANTOM_PROXY_TOKEN_TTL=1s", "PHANTOM_PROXY_TOKEN_MAX_TTL=2s")
	p := harness.StartProxy(t, v, "-secret-id-wrapped")
	tok, _ := v.Mint(t, "demo")
	deadline := time.Now().Add(6 * time.Second) // past two max TTLs
	for time.Now().Before(deadline) {
		if code, body := p.Call(t, "GET", "/v1/customers", tok); code != 200 {
			t.Fatalf("%d %s\n%s", code, body, p.Out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := strings.Count(p.Out.String(), "logged in to Vault"); n < 3 {
		t.Fatalf("%d logins in 6s of 2s tokens:\n%s", n, p.Out)
	}
}
