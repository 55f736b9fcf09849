package e2e

import (
	"os"
	"strings"
	"testing"

	"github.com/phantomvault/phantom/e2e/harness"
)

// TestLeastPrivilege checks the bootstrap's policies as each party would meet
// them: the proxy can only resolve, CI can only mint, admins cannot resolve,
// and a phantom token is worth nothing to Vault.
func TestLeastPrivilege(t *testing.T) {
	v := harness.StartDevVault(t)
	v.Bootstrap(t, "PHANTOM_ISSUER_ROUTES=stripe-*")
	for _, route := range []string{"stripe-customers", "openai"} {
		v.MustCLI(t, "write", "phantom/routes/"+route, "upstream=https://api.example.com",
			"allowed_paths=/v1/**", "allowed_methods=GET", "credential="+realKey)
	}
	roleID, _ := os.ReadFile(v.RoleIDFile)
	secretID, _ := os.ReadFile(v.SecretIDFile)
	proxyToken := strings.TrimSpace(v.MustCLI(t, "write", "-field=token", "auth/approle/login",
		"role_id="+strings.TrimSpace(string(roleID)), "secret_id="+strings.TrimSpace(string(secretID))))
	issuerToken := strings.TrimSpace(v.MustCLI(t, "token", "create", "-policy=phantom-issuer", "-field=token"))
	adminToken := strings.TrimSpace(v.MustCLI(t, "token", "create", "-policy=phantom-admin", "-field=token"))
	phantomToken, leaseID := v.Mint(t, "stripe-customers")

	// The proxy resolves with PATCH (see proxy/engine/http_calls.go).
	resolve := []string{"patch", "phantom/resolve", "token=" + phantomToken, "method=GET", "path=/v1/x", "client_ip=127.0.0.1"}
	resolveWrite := append([]string{"write"}, resolve[1:]...)
	// The forward listener checks each CONNECT with PATCH too (proxy/engine/tunnel.go).
	tunnelCheck := []string{"patch", "phantom/tunnel", "origin=api.example.com:443", "token=" + phantomToken, "client_ip=127.0.0.1"}
	tunnelWrite := append([]string{"write"}, tunnelCheck[1:]...)
	cases := []struct {
		who, token string
		args       []string
		allowed    bool
	}{
		{"proxy", proxyToken, resolve, true},
		{"proxy", proxyToken, resolveWrite, false},
		{"proxy", proxyToken, tunnelCheck, true},
		{"proxy", proxyToken, tunnelWrite, false},
		{"issuer", issuerToken, tunnelCheck, false},
		{"admin", adminToken, tunnelCheck, false},
		{"phantom token", phantomToken, tunnelCheck, false},
		{"proxy", proxyToken, []string{"token", "renew"}, true},
		{"proxy", proxyToken, []string{"token", "lookup"}, false}, // no default policy
		{"proxy", proxyToken, []string{"read", "phantom/routes/stripe-customers"}, false},
		{"proxy", proxyToken, []string{"list", "phantom/routes"}, false},
		{"proxy", proxyToken, []string{"read", "phantom/token/stripe-customers"}, false},
		{"proxy", proxyToken, []string{"list", "phantom/tokens"}, false},
		{"proxy", proxyToken, []string{"write", "phantom/routes/stripe-customers", "credential=x"}, false},
		{"issuer", issuerToken, []string{"read", "phantom/token/stripe-customers"}, true},
		{"issuer", issuerToken, []string{"read", "-field=proxy_url", "phantom/config"}, true},
		{"issuer", issuerToken, []string{"read", "phantom/token/openai"}, false}, // outside PHANTOM_ISSUER_ROUTES
		{"issuer", issuerToken, resolve, false},
		{"issuer", issuerToken, []string{"read", "phantom/routes/stripe-customers"}, false},
		{"issuer", issuerToken, []string{"write", "phantom/config", "proxy_url=http://evil.example"}, false},
		{"admin", adminToken, []string{"write", "phantom/routes/openai", "allowed_methods=GET,POST"}, true},
		{"admin", adminToken, []string{"read", "phantom/routes/openai"}, true},
		{"admin", adminToken, []string{"list", "phantom/tokens"}, true},
		{"admin", adminToken, []string{"lease", "revoke", "-sync", "-prefix", "phantom/token/openai"}, true},
		{"admin", adminToken, resolve, false},
		{"admin", adminToken, resolveWrite, false},
		{"phantom token", phantomToken, []string{"token", "lookup"}, false},
		{"phantom token", phantomToken, []string{"read", "phantom/token/stripe-customers"}, false},
		{"phantom token", phantomToken, resolve, false},
	}
	for _, c := range cases {
		out, errOut, err := v.RunAs(t, c.token, "table", "", c.args...)
		if allowed := err == nil; allowed != c.allowed {
			t.Errorf("%s: vault %s: allowed=%v, want %v\n%s%s", c.who, strings.Join(c.args[:2], " "), allowed, c.allowed, out, errOut)
		}
		if !c.allowed && err != nil && !strings.Contains(errOut, "permission denied") {
			t.Errorf("%s: vault %s failed for another reason:\n%s", c.who, strings.Join(c.args[:2], " "), errOut)
		}
		if strings.Contains(out, realKey) && c.who != "proxy" {
			t.Errorf("%s: vault %s shows the credential", c.who, strings.Join(c.args[:2], " "))
		}
	}
	// The issuer cannot revoke what it minted by prefix; the admin can.
	if _, _, err := v.RunAs(t, issuerToken, "table", "", "lease", "revoke", "-sync", "-prefix", "phantom/token/stripe-customers"); err == nil {
		t.Error("the issuer revoked by prefix")
	}
	if _, errOut, err := v.RunAs(t, adminToken, "table", "", "lease", "revoke", "-sync", leaseID); err != nil {
		t.Errorf("the admin could not revoke a lease: %s", errOut)
	}
}

// TestPluginUpgradeKeepsLiveTokens registers a new plugin version through the
// bootstrap, which moves the mount to it and reloads: tokens minted by the old
// version keep working through the proxy, and their leases still renew.
func TestPluginUpgradeKeepsLiveTokens(t *testing.T) {
	v := harness.StartDevVault(t)
	tools := harness.Require(t)
	upstreamRoute(t, v, "demo")
	p := harness.StartProxy(t, v)
	tok, leaseID := v.Mint(t, "demo", "ttl=1h")
	if code, body := p.Call(t, "GET", "/v1/customers", tok); code != 200 {
		t.Fatalf("before the upgrade: %d %s", code, body)
	}

	// No PHANTOM_PLUGIN_VERSION: the bootstrap registers what the binary reports.
	out := v.Bootstrap(t, "PHANTOM_PLUGIN_BIN="+tools.PluginVersion(t, "v9.9.1"))
	if !strings.Contains(out, "now runs v9.9.1 (reloaded)") {
		t.Fatalf("bootstrap did not upgrade:\n%s", out)
	}
	mounts := v.JSON(t, "secrets", "list", "-detailed")
	if got := mounts["phantom/"].(map[string]any)["running_plugin_version"]; got != "v9.9.1" {
		t.Fatalf("running version %v", got)
	}
	if code, body := p.Call(t, "GET", "/v1/customers", tok); code != 200 {
		t.Fatalf("a live token after the upgrade: %d %s", code, body)
	}
	if renewed := v.JSON(t, "lease", "renew", leaseID); renewed["lease_duration"] == nil {
		t.Fatalf("renew after the upgrade: %v", renewed)
	}
	fresh, _ := v.Mint(t, "demo")
	if code, _ := p.Call(t, "GET", "/v1/customers", fresh); code != 200 {
		t.Fatalf("a token minted by v9.9.1: %d", code)
	}
}
