package e2e

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// keyCheckingUpstream is an API that accepts only its current real key, as
// Bearer, and records what it received.
type keyCheckingUpstream struct {
	mu       sync.Mutex
	key      string
	received []string // Authorization headers and targets, to check for tokens
	srv      *http.Server
	url      string
}

func startUpstream(t *testing.T, key string) *keyCheckingUpstream {
	t.Helper()
	u := &keyCheckingUpstream{key: key}
	ln := listenLoopback(t)
	u.url = "http://" + ln.Addr().String()
	u.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		defer u.mu.Unlock()
		u.received = append(u.received, r.Header.Get("Authorization")+" "+r.RequestURI)
		if r.Header.Get("Authorization") != "Bearer "+u.key {
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error":"Incorrect API key provided: `+strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")+`"}`)
			return
		}
		io.WriteString(w, `{"object":"list","path":"`+r.URL.Path+`"}`)
	})}
	go u.srv.Serve(ln)
	t.Cleanup(func() { u.srv.Close() })
	return u
}

func (u *keyCheckingUpstream) setKey(k string) {
	u.mu.Lock()
	u.key = k
	u.mu.Unlock()
}

func (u *keyCheckingUpstream) log() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return strings.Join(u.received, "\n")
}

// setupProxyAppRole gives the proxy a least-privilege AppRole, as the
// bootstrap does: update on phantom/resolve and nothing else.
func setupProxyAppRole(t *testing.T, v *vaultServer) (roleIDFile, secretIDFile string) {
	t.Helper()
	policy := filepath.Join(v.home, "proxy-policy.hcl")
	if err := os.WriteFile(policy, []byte(`path "phantom/resolve" { capabilities = ["update"] }`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	v.mustCLI(t, "policy", "write", "phantom-proxy", policy)
	v.mustCLI(t, "auth", "enable", "approle")
	v.mustCLI(t, "write", "auth/approle/role/phantom-proxy",
		"token_policies=phantom-proxy", "token_ttl=1h", "token_max_ttl=4h", "token_num_uses=0", "secret_id_num_uses=0")
	roleIDFile = filepath.Join(v.home, "role_id")
	secretIDFile = filepath.Join(v.home, "secret_id")
	roleID := v.mustCLI(t, "read", "-field=role_id", "auth/approle/role/phantom-proxy/role-id")
	secretID := v.mustCLI(t, "write", "-f", "-field=secret_id", "auth/approle/role/phantom-proxy/secret-id")
	for f, val := range map[string]string{roleIDFile: roleID, secretIDFile: secretID} {
		if err := os.WriteFile(f, []byte(strings.TrimSpace(val)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return roleIDFile, secretIDFile
}

// proxyProcess is the real phantom-proxy binary.
type proxyProcess struct {
	url, admin string
	auditFile  string
	out        *syncBuffer
}

func startProxy(t *testing.T, v *vaultServer, roleIDFile, secretIDFile string, extra ...string) *proxyProcess {
	t.Helper()
	dir := t.TempDir()
	p := &proxyProcess{
		url:       "http://127.0.0.1:" + strconv.Itoa(freePort(t)),
		admin:     "http://127.0.0.1:" + strconv.Itoa(freePort(t)),
		auditFile: filepath.Join(dir, "audit.log"),
		out:       new(syncBuffer),
	}
	args := append([]string{
		"-listen=" + strings.TrimPrefix(p.url, "http://"),
		"-admin-listen=" + strings.TrimPrefix(p.admin, "http://"),
		"-vault-addr=" + v.addr,
		"-role-id-file=" + roleIDFile,
		"-secret-id-file=" + secretIDFile,
		"-audit-file=" + p.auditFile,
		"-vault-timeout=1s",
		"-shutdown-timeout=5s",
		"-log-level=debug",
	}, extra...)
	cmd := exec.Command(proxyBin, args...)
	cmd.Env = append(os.Environ(), "VAULT_TOKEN=", "VAULT_ADDR=")
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	if !eventually(20*time.Second, func() bool { return httpStatus(p.admin+"/readyz") == 200 }) {
		t.Fatalf("the proxy did not become ready; its output:\n%s", p.out)
	}
	return p
}

func httpStatus(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// call sends one agent request through the proxy.
func (p *proxyProcess) call(t *testing.T, method, path, tok string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, p.url+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestProxyAgainstRealVault runs the real proxy binary against a real,
// persistent Vault with the real plugin: the proxy's whole life with Vault.
func TestProxyAgainstRealVault(t *testing.T) {
	v := startPersistentVault(t)
	up := startUpstream(t, realKey)
	v.mustCLI(t, "write", "phantom/routes/demo", "upstream="+up.url, "allowed_paths=/v1/**", "allowed_methods=GET", "credential="+realKey)
	roleIDFile, secretIDFile := setupProxyAppRole(t, v)
	p := startProxy(t, v, roleIDFile, secretIDFile)

	lease := v.jsonCLI(t, "read", "phantom/token/demo", "ttl=1h")
	tok := lease["data"].(map[string]any)["token"].(string)
	leaseID := lease["lease_id"].(string)

	// An allowed call reaches the upstream with the real key only.
	if code, body := p.call(t, "GET", "/v1/customers?limit=3", tok); code != 200 || !strings.Contains(body, `"path":"/v1/customers"`) {
		t.Fatalf("allowed call: %d %s", code, body)
	}
	// Out of scope: 403, never forwarded.
	before := up.log()
	for _, c := range []struct{ method, path string }{{"POST", "/v1/customers"}, {"GET", "/v2/admin"}} {
		if code, body := p.call(t, c.method, c.path, tok); code != 403 || !strings.Contains(body, "phantom_forbidden") {
			t.Fatalf("%s %s: %d %s", c.method, c.path, code, body)
		}
	}
	if up.log() != before {
		t.Fatal("an out-of-scope call reached the upstream")
	}

	// Rotation: the next request carries the new key.
	up.setKey(rotateKey)
	v.mustCLI(t, "write", "phantom/routes/demo", "credential="+rotateKey)
	if code, body := p.call(t, "GET", "/v1/customers", tok); code != 200 {
		t.Fatalf("after rotation: %d %s", code, body)
	}

	// The proxy's own Vault token revoked: it logs in again and no request fails.
	v.mustCLI(t, "lease", "revoke", "-sync", "-prefix", "auth/approle/login")
	for i := range 5 {
		if code, body := p.call(t, "GET", "/v1/customers", tok); code != 200 {
			t.Fatalf("request %d after the proxy's token was revoked: %d %s\n%s", i, code, body, p.out)
		}
	}
	if !strings.Contains(p.out.String(), "logging in again") {
		t.Fatalf("no re-login in the proxy's log:\n%s", p.out)
	}

	// Vault stopped: 503 at once, not-ready; back by itself when Vault is.
	v.stop()
	start := time.Now()
	code, body := p.call(t, "GET", "/v1/customers", tok)
	t.Logf("with Vault down the agent got %d after %v", code, time.Since(start).Round(time.Millisecond))
	if code != 503 || !strings.Contains(body, "phantom_unavailable") {
		t.Fatalf("with Vault down: %d %s", code, body)
	}
	if s := httpStatus(p.admin + "/readyz"); s != 503 {
		t.Fatalf("readyz with Vault down: %d", s)
	}
	v.restart(t)
	start = time.Now()
	if !eventually(60*time.Second, func() bool { c, _ := p.call(t, "GET", "/v1/customers", tok); return c == 200 }) {
		t.Fatalf("service did not come back after Vault did; proxy output:\n%s", p.out)
	}
	t.Logf("service returned %v after Vault was unsealed", time.Since(start).Round(time.Millisecond))
	if s := httpStatus(p.admin + "/readyz"); s != 200 {
		t.Fatalf("readyz after Vault returned: %d", s)
	}

	// Revoking the lease: 401 on the very next request.
	v.mustCLI(t, "lease", "revoke", "-sync", leaseID)
	if code, body := p.call(t, "GET", "/v1/customers", tok); code != 401 || !strings.Contains(body, `"reason":"revoked"`) {
		t.Fatalf("after revoke: %d %s", code, body)
	}

	// Nothing secret in the upstream's view, the audit log or the proxy's output.
	audit, err := os.ReadFile(p.auditFile)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(audit), `"accessor":"`+lease["data"].(map[string]any)["accessor"].(string)+`"`) {
		t.Fatalf("the audit log lacks the token's accessor:\n%s", audit)
	}
	for name, text := range map[string]string{"upstream": up.log(), "audit log": string(audit), "proxy output": p.out.String()} {
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
	v := startVault(t)
	up := startUpstream(t, realKey)
	v.mustCLI(t, "write", "phantom/routes/demo", "upstream="+up.url, "allowed_paths=/v1/**", "allowed_methods=GET", "credential="+realKey)
	roleIDFile, secretIDFile := setupProxyAppRole(t, v)
	v.mustCLI(t, "write", "auth/approle/role/phantom-proxy", "token_ttl=2s", "token_max_ttl=5s")
	wrapped := v.mustCLI(t, "write", "-wrap-ttl=5m", "-f", "-field=wrapping_token", "auth/approle/role/phantom-proxy/secret-id")
	if err := os.WriteFile(secretIDFile, []byte(wrapped), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, v, roleIDFile, secretIDFile, "-secret-id-wrapped", "-remove-secret-id-file")
	if _, err := os.Stat(secretIDFile); !os.IsNotExist(err) {
		t.Fatalf("the secret_id file was not removed: %v", err)
	}
	tok := strings.TrimSpace(v.mustCLI(t, "read", "-field=token", "phantom/token/demo"))

	deadline := time.Now().Add(12 * time.Second) // past two max TTLs
	n := 0
	for time.Now().Before(deadline) {
		if code, body := p.call(t, "GET", "/v1/customers", tok); code != 200 {
			t.Fatalf("request %d: %d %s\n%s", n, code, body, p.out)
		}
		n++
		time.Sleep(100 * time.Millisecond)
	}
	logins := strings.Count(p.out.String(), "logged in to Vault")
	if logins < 3 || !strings.Contains(p.out.String(), "renewed the Vault token") {
		t.Fatalf("%d logins and no renewal in %d requests; proxy output:\n%s", logins, n, p.out)
	}
	t.Logf("%d requests, %d logins, none failed", n, logins)
}
