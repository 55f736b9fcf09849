package e2e

import (
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phantomvault/phantom/e2e/harness"
	"github.com/phantomvault/phantom/internal/testutil"
)

// writeRoute registers the route most tests use: GET on /v1/** of upstream,
// with the real key.
func writeRoute(t *testing.T, v *harness.Vault, name, upstream string) {
	t.Helper()
	v.MustCLI(t, "write", "phantom/routes/"+name, "upstream="+upstream, "allowed_paths=/v1/**", "allowed_methods=GET", "credential="+realKey)
}

// usageRoute writes route name: POST on paths of upstream with the real
// key, the usage in its answers read as format, and extra settings (limits).
func usageRoute(t *testing.T, v *harness.Vault, name, upstream, paths, format string, extra ...string) {
	t.Helper()
	v.MustCLI(t, append([]string{"write", "phantom/routes/" + name, "upstream=" + upstream, "allowed_paths=" + paths,
		"allowed_methods=POST", "credential=" + realKey, "usage_format=" + format}, extra...)...)
}

// upstreamRoute starts an upstream that takes the real key and writes
// route name to it, as writeRoute does.
func upstreamRoute(t *testing.T, v *harness.Vault, name string) *keyCheckingUpstream {
	t.Helper()
	up := startUpstream(t, realKey)
	writeRoute(t, v, name, up.URL)
	return up
}

// servesAgain waits up to timeout for tok's next GET /v1/customers through p
// to get 200, as an agent retrying after a fault would, and fails the test
// with the message otherwise.
func servesAgain(t *testing.T, p *harness.Proxy, tok string, timeout time.Duration, format string, args ...any) {
	t.Helper()
	testutil.Eventually(t, timeout, func() bool { c, _ := p.Call(t, "GET", "/v1/customers", tok); return c == 200 }, format, args...)
}

// failsClosed checks what an agent and an operator see while Vault cannot
// answer (when says in what state): a 503 phantom_unavailable at once, a
// not-ready /readyz, and nothing forwarded to up.
func failsClosed(t *testing.T, p *harness.Proxy, up *keyCheckingUpstream, tok, when string) {
	t.Helper()
	forwarded := up.log()
	start := time.Now()
	code, body := p.Call(t, "GET", "/v1/customers", tok)
	t.Logf("%s the agent got %d after %v", when, code, time.Since(start).Round(time.Millisecond))
	if code != 503 || !strings.Contains(body, "phantom_unavailable") {
		t.Fatalf("%s: %d %s", when, code, body)
	}
	if s := harness.Status(p.Admin + "/readyz"); s != 503 {
		t.Fatalf("readyz %s: %d", when, s)
	}
	if up.log() != forwarded {
		t.Fatalf("a request was forwarded %s", when)
	}
}

// recovers waits up to timeout for p to serve tok again by itself, then
// checks that it reports ready (when says after what).
func recovers(t *testing.T, p *harness.Proxy, tok string, timeout time.Duration, when string) {
	t.Helper()
	start := time.Now()
	servesAgain(t, p, tok, timeout, "no service %s; proxy output:\n%s", when, p.Out)
	t.Logf("served again %v %s", time.Since(start).Round(time.Millisecond), when)
	if s := harness.Status(p.Admin + "/readyz"); s != 200 {
		t.Fatalf("readyz %s: %d", when, s)
	}
}

// keyCheckingUpstream is an API that accepts only its current real key, as
// Bearer, and records what it received.
type keyCheckingUpstream struct {
	*harness.Upstream
	mu  sync.Mutex
	key string
}

func startUpstream(t *testing.T, key string) *keyCheckingUpstream {
	t.Helper()
	u := &keyCheckingUpstream{key: key}
	u.Upstream = harness.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		defer u.mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer "+u.key {
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error":"Incorrect API key provided: `+strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")+`"}`)
			return
		}
		io.WriteString(w, `{"object":"list","path":"`+r.URL.Path+`"}`)
	}))
	return u
}

func (u *keyCheckingUpstream) setKey(k string) {
	u.mu.Lock()
	u.key = k
	u.mu.Unlock()
}

// log is the Authorization header and target of each request received,
// to check for tokens.
func (u *keyCheckingUpstream) log() string {
	var lines []string
	for _, r := range u.Requests() {
		lines = append(lines, r.Header.Get("Authorization")+" "+r.URI)
	}
	return strings.Join(lines, "\n")
}

// TestProxyAgainstRealVault runs the real proxy binary against a real,
// persistent Vault with the real plugin: the proxy's whole life with Vault.
func TestProxyAgainstRealVault(t *testing.T) {
	v := harness.StartPersistentVault(t)
	up := upstreamRoute(t, v, "demo")
	p := harness.StartProxy(t, v)

	lease := v.JSON(t, "read", "phantom/token/demo", "ttl=1h")
	tok := lease["data"].(map[string]any)["token"].(string)
	leaseID := lease["lease_id"].(string)

	// An allowed call reaches the upstream with the real key only.
	if code, body := p.Call(t, "GET", "/v1/customers?limit=3", tok); code != 200 || !strings.Contains(body, `"path":"/v1/customers"`) {
		t.Fatalf("allowed call: %d %s", code, body)
	}
	// Out of scope: 403, never forwarded.
	before := up.log()
	for _, c := range []struct{ method, path string }{{"POST", "/v1/customers"}, {"GET", "/v2/admin"}} {
		if code, body := p.Call(t, c.method, c.path, tok); code != 403 || !strings.Contains(body, "phantom_forbidden") {
			t.Fatalf("%s %s: %d %s", c.method, c.path, code, body)
		}
	}
	if up.log() != before {
		t.Fatal("an out-of-scope call reached the upstream")
	}

	// Rotation: the next request carries the new key.
	up.setKey(rotateKey)
	v.MustCLI(t, "write", "phantom/routes/demo", "credential="+rotateKey)
	if code, body := p.Call(t, "GET", "/v1/customers", tok); code != 200 {
		t.Fatalf("after rotation: %d %s", code, body)
	}

	// The proxy's own Vault token revoked: it logs in again and no request fails.
	v.MustCLI(t, "lease", "revoke", "-sync", "-prefix", "auth/approle/login")
	for i := range 5 {
		if code, body := p.Call(t, "GET", "/v1/customers", tok); code != 200 {
			t.Fatalf("request %d after the proxy's token was revoked: %d %s\n%s", i, code, body, p.Out)
		}
	}
	if !strings.Contains(p.Out.String(), "logging in again") {
		t.Fatalf("no re-login in the proxy's log:\n%s", p.Out)
	}

	// Vault stopped: 503 at once, not-ready, nothing forwarded; back by
	// itself when Vault is.
	v.Stop()
	failsClosed(t, p, up, tok, "with Vault down")
	v.Restart(t)
	recovers(t, p, tok, 60*time.Second, "after Vault returned")

	// Revoking the lease: 401 on the very next request.
	v.MustCLI(t, "lease", "revoke", "-sync", leaseID)
	if code, body := p.Call(t, "GET", "/v1/customers", tok); code != 401 || !strings.Contains(body, `"reason":"revoked"`) {
		t.Fatalf("after revoke: %d %s", code, body)
	}

	// Nothing secret in the upstream's view, the audit log or the proxy's output.
	audit, err := os.ReadFile(p.AuditFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(audit), `"accessor":"`+lease["data"].(map[string]any)["accessor"].(string)+`"`) {
		t.Fatalf("the audit log lacks the token's accessor:\n%s", audit)
	}
	for name, text := range map[string]string{"upstream": up.log(), "audit log": string(audit), "proxy output": p.Out.String()} {
		if strings.Contains(text, tok) {
			t.Errorf("the %s holds the phantom token", name)
		}
		if name != "upstream" && (strings.Contains(text, realKey) || strings.Contains(text, rotateKey)) {
			t.Errorf("the %s holds a real key", name)
		}
	}
}

// TestProxyWrappedSecretIDAndTokenLifetime: the proxy unwraps a wrapped
// secret_id, removes its file, renews a short-lived token, and logs in again
// (from the remembered secret_id) when the token reaches its max TTL, without
// failing a request.
func TestProxyWrappedSecretIDAndTokenLifetime(t *testing.T) {
	v := harness.StartDevVault(t)
	upstreamRoute(t, v, "demo")
	v.Bootstrap(t, "PHANTOM_SECRET_ID_WRAP_TTL=5m", "PHANTOM_PROXY_TOKEN_TTL=2s", "PHANTOM_PROXY_TOKEN_MAX_TTL=5s")
	p := harness.StartProxy(t, v, "-secret-id-wrapped", "-remove-secret-id-file")
	if _, err := os.Stat(v.SecretIDFile); !os.IsNotExist(err) {
		t.Fatalf("the secret_id file was not removed: %v", err)
	}
	tok := strings.TrimSpace(v.MustCLI(t, "read", "-field=token", "phantom/token/demo"))

	deadline := time.Now().Add(12 * time.Second) // past two max TTLs
	n := 0
	for time.Now().Before(deadline) {
		if code, body := p.Call(t, "GET", "/v1/customers", tok); code != 200 {
			t.Fatalf("request %d: %d %s\n%s", n, code, body, p.Out)
		}
		n++
		time.Sleep(100 * time.Millisecond)
	}
	logins := strings.Count(p.Out.String(), "logged in to Vault")
	if logins < 3 || !strings.Contains(p.Out.String(), "renewed the Vault token") {
		t.Fatalf("%d logins and no renewal in %d requests; proxy output:\n%s", logins, n, p.Out)
	}
	t.Logf("%d requests, %d logins, none failed", n, logins)
}

// TestTokenScopeThroughTheProxy: what a mint narrows (uses, client
// addresses, paths, methods) holds at the proxy, and usage shows on the
// token's record.
func TestTokenScopeThroughTheProxy(t *testing.T) {
	v := harness.StartDevVault(t)
	up := startUpstream(t, realKey)
	v.MustCLI(t, "write", "phantom/routes/demo", "upstream="+up.URL, "allowed_paths=/v1/**", "allowed_methods=GET,POST", "credential="+realKey)
	p := harness.StartProxy(t, v)

	twice, _ := v.Mint(t, "demo", "num_uses=2")
	for i := range 2 {
		if code, body := p.Call(t, "GET", "/v1/customers", twice); code != 200 {
			t.Fatalf("use %d: %d %s", i+1, code, body)
		}
	}
	if code, body := p.Call(t, "GET", "/v1/customers", twice); code != 401 || !strings.Contains(body, "uses_exhausted") {
		t.Fatalf("third use: %d %s", code, body)
	}

	elsewhere, _ := v.Mint(t, "demo", "bound_cidrs=10.0.0.0/8")
	if code, body := p.Call(t, "GET", "/v1/customers", elsewhere); code != 403 || !strings.Contains(body, "cidr_denied") {
		t.Fatalf("token bound elsewhere: %d %s", code, body)
	}
	here, _ := v.Mint(t, "demo", "bound_cidrs=127.0.0.1")
	if code, _ := p.Call(t, "GET", "/v1/customers", here); code != 200 {
		t.Fatalf("token bound to loopback: %d", code)
	}

	narrow, accessor := v.MintAccessor(t, "demo", "allowed_paths=/v1/customers/*", "allowed_methods=GET", "metadata=agent=triage-bot")
	for _, c := range []struct {
		method, path string
		want         int
	}{{"GET", "/v1/customers/cus_1", 200}, {"GET", "/v1/customers", 403}, {"POST", "/v1/customers/cus_1", 403}} {
		if code, body := p.Call(t, c.method, c.path, narrow); code != c.want {
			t.Fatalf("narrow token %s %s: %d %s", c.method, c.path, code, body)
		}
	}
	info := v.JSON(t, "read", "phantom/tokens/"+accessor)["data"].(map[string]any)
	if info["requests"] != float64(1) || info["metadata"].(map[string]any)["agent"] != "triage-bot" || info["status"] != "active" {
		t.Fatalf("token record: %v", info)
	}
}
