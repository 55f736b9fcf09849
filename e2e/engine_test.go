package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/phantomvault/phantom/e2e/harness"
	"github.com/phantomvault/phantom/internal/testutil"

	"github.com/phantomvault/phantom/internal/token"
)

const (
	realKey   = "sk_live_51E2Ereal0credential0never0shown"
	rotateKey = "sk_live_51E2Erotated0credential0never0shown"
)

// TestEngineThroughVaultCLI drives the real plugin binary in a real Vault with
// the vault CLI, exactly as a security team, CI and the proxy would.
func TestEngineThroughVaultCLI(t *testing.T) {
	v := harness.StartDevVault(t)
	auditLog := filepath.Join(v.Home, "audit.log")
	v.MustCLI(t, "audit", "enable", "file", "file_path="+auditLog)
	var outputs []string // every CLI answer, scanned for secrets at the end
	run := func(args ...string) string {
		t.Helper()
		out := v.MustCLI(t, args...)
		outputs = append(outputs, out)
		return out
	}

	// Security team: configure and register a route.
	run("write", "phantom/config", "proxy_url=http://127.0.0.1:8080")
	run("write", "phantom/routes/demo",
		"upstream=https://api.example.com",
		"allowed_paths=/v1/customers/**",
		"allowed_methods=GET",
		"credential="+realKey,
		"headers=Stripe-Version=2024-06-20",
	)
	route := v.JSON(t, "read", "phantom/routes/demo")["data"].(map[string]any)
	if fp := route["credential_fingerprint"].(string); !strings.HasPrefix(fp, "sha256:") {
		t.Fatalf("fingerprint %q", fp)
	}
	if _, ok := route["credential"]; ok {
		t.Fatal("route read shows the credential")
	}
	outputs = append(outputs, run("read", "phantom/routes/demo"), run("list", "phantom/routes"))

	// Bad input is a clear 400, and the credential is not echoed.
	out, errOut, err := v.Run(t, "write", "phantom/routes/bad", "upstream=http://api.example.com",
		"allowed_paths=/x", "allowed_methods=GET", "credential="+realKey)
	if err == nil || !strings.Contains(errOut, "Code: 400") || !strings.Contains(errOut, "allow_http") {
		t.Fatalf("plain-http upstream: err=%v\n%s%s", err, out, errOut)
	}
	outputs = append(outputs, out, errOut)
	_, errOut, err = v.Run(t, "read", "phantom/token/nope")
	if err == nil || !strings.Contains(errOut, `no route named "nope"`) {
		t.Fatalf("unknown route: %v %s", err, errOut)
	}

	// CI: mint a token, a real lease.
	lease := v.JSON(t, "read", "phantom/token/demo", "ttl=1h", "max_ttl=3h") // room to renew, asked for at mint
	data := lease["data"].(map[string]any)
	minted, leaseID := data["token"].(string), lease["lease_id"].(string)
	if token.Check(minted) != nil || !strings.HasPrefix(minted, "phm_") {
		t.Fatalf("minted %q", minted)
	}
	if !strings.HasPrefix(leaseID, "phantom/token/demo/") || lease["lease_duration"] != float64(3600) || lease["renewable"] != true {
		t.Fatalf("lease: %v", lease)
	}
	if data["proxy_url"] != "http://127.0.0.1:8080" {
		t.Fatalf("proxy_url %v", data["proxy_url"])
	}
	if got := strings.TrimSpace(v.MustCLI(t, "read", "-field=proxy_url", "phantom/config")); got != "http://127.0.0.1:8080" {
		t.Fatalf("config proxy_url %q", got)
	}

	// The proxy: resolve allowed and denied.
	resolve := func(tok, method, path string) map[string]any {
		t.Helper()
		return v.JSON(t, "write", "phantom/resolve", "token="+tok, "method="+method, "path="+path, "client_ip=127.0.0.1")["data"].(map[string]any)
	}
	d := resolve(minted, "GET", "/v1/customers/cus_1")
	if d["allowed"] != true || d["credential"] != realKey || d["upstream"] != "https://api.example.com" || d["accessor"] != data["accessor"] {
		t.Fatalf("allowed resolve: %v", redact(d))
	}
	for _, tc := range []struct{ method, path, reason string }{
		{"POST", "/v1/customers/cus_1", "method_not_allowed"},
		{"GET", "/v1/charges", "path_not_allowed"},
		{"GET", "/v1/customers/%2e%2e/charges", "bad_request"},
	} {
		if d := resolve(minted, tc.method, tc.path); d["allowed"] != false || d["reason"] != tc.reason {
			t.Errorf("%s %s: %v", tc.method, tc.path, d)
		}
	}

	// Rotation reaches live tokens on the next resolve.
	run("write", "phantom/routes/demo", "credential="+rotateKey)
	if d := resolve(minted, "GET", "/v1/customers"); d["credential"] != rotateKey {
		t.Fatal("rotation did not reach the live token")
	}

	// Renew extends the lease and the token.
	renewed := v.JSON(t, "lease", "renew", "-increment=2h", leaseID)
	if renewed["lease_duration"] != float64(7200) {
		t.Fatalf("renew: %v", renewed)
	}
	acc := data["accessor"].(string)
	info := v.JSON(t, "read", "phantom/tokens/"+acc)["data"].(map[string]any)
	expires, _ := time.Parse(time.RFC3339, info["expires_at"].(string))
	if d := time.Until(expires); d < 110*time.Minute || d > 121*time.Minute {
		t.Fatalf("token expires in %v after a 2h renewal", d)
	}

	// Revoking the lease kills the token on its next use.
	run("lease", "revoke", leaseID)
	testutil.Eventually(t, 5*time.Second, func() bool { return resolve(minted, "GET", "/v1/customers")["reason"] == "revoked" },
		"token still resolves after lease revoke")

	// revoke -prefix kills every token of the route.
	var tokens []string
	for range 3 {
		tokens = append(tokens, strings.TrimSpace(v.MustCLI(t, "read", "-field=token", "phantom/token/demo")))
	}
	for _, tok := range tokens {
		if resolve(tok, "GET", "/v1/customers")["allowed"] != true {
			t.Fatal("fresh token denied")
		}
	}
	run("lease", "revoke", "-prefix", "phantom/token/demo")
	for _, tok := range tokens {
		testutil.Eventually(t, 5*time.Second, func() bool { return resolve(tok, "GET", "/v1/customers")["reason"] == "revoked" },
			"token still resolves after revoke -prefix")
	}

	// Operators: tokens by accessor, tidy, path help.
	out, _, err = v.RunAs(t, v.Token, "json", "", "list", "phantom/tokens")
	var accessors []string
	if err := json.Unmarshal([]byte(out), &accessors); err != nil || len(accessors) != 4 || !slices.Contains(accessors, acc) {
		t.Fatalf("list phantom/tokens: %v %v", accessors, err)
	}
	pageThroughTokens(t, v, accessors)
	if st := v.JSON(t, "read", "phantom/tokens/"+acc)["data"].(map[string]any)["status"]; st != "revoked" {
		t.Fatalf("status %v", st)
	}
	outputs = append(outputs, run("write", "-f", "phantom/tidy"))
	help := run("path-help", "phantom/routes/demo")
	for _, want := range []string{"credential_fingerprint", "allowed_paths", "auth_type", "write-only"} {
		if !strings.Contains(help, want) {
			t.Errorf("path-help lacks %q", want)
		}
	}

	// Deleting the route kills what is left.
	last := strings.TrimSpace(v.MustCLI(t, "read", "-field=token", "phantom/token/demo"))
	run("delete", "phantom/routes/demo")
	if r := resolve(last, "GET", "/v1/customers")["reason"]; r != "route_deleted" {
		t.Fatalf("after route delete: %v", r)
	}

	for _, out := range outputs {
		for _, secret := range []string{realKey, rotateKey, minted} {
			if strings.Contains(out, secret) {
				t.Errorf("a CLI answer shows a secret:\n%s", out)
			}
		}
	}
	audit, err := os.ReadFile(auditLog)
	if err != nil || len(audit) == 0 {
		t.Fatalf("audit log: %v", err)
	}
	for _, secret := range append(tokens, realKey, rotateKey, minted) {
		if strings.Contains(string(audit), secret) {
			t.Error("Vault's audit log holds a secret in clear text")
		}
	}
}

// redact hides the credential in failure messages.
func redact(d map[string]any) map[string]any {
	c := make(map[string]any, len(d))
	for k, v := range d {
		c[k] = v
	}
	if _, ok := c["credential"]; ok {
		c["credential"] = "<redacted>"
	}
	return c
}

// pageThroughTokens lists the tokens a page at a time the two ways the docs
// give: vault read with list=true, and LIST on the HTTP API.
func pageThroughTokens(t *testing.T, v *harness.Vault, all []string) {
	t.Helper()
	want := slices.Sorted(slices.Values(all))
	keys := func(data any) []string {
		var out []string
		if m, ok := data.(map[string]any); ok {
			list, _ := m["keys"].([]any)
			for _, k := range list {
				out = append(out, k.(string))
			}
		}
		return out
	}
	var got []string
	for page := 0; page < len(want)+1; page++ {
		args := []string{"read", "phantom/tokens/", "list=true", "limit=3"}
		if len(got) > 0 {
			args = append(args, "after="+got[len(got)-1])
		}
		out, errOut, err := v.RunAs(t, v.Token, "json", "", args...)
		if err != nil && len(got) > 0 && strings.Contains(out+errOut, "No value found") {
			break // the page after the last is empty
		}
		var resp map[string]any
		if err != nil || json.Unmarshal([]byte(out), &resp) != nil {
			t.Fatalf("vault %v: %v\n%s%s", args, err, out, errOut)
		}
		got = append(got, keys(resp["data"])...)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("vault read phantom/tokens/ list=true, paged: %v, want %v", got, want)
	}
	status, resp := v.API(t, "LIST", "phantom/tokens?limit=1&after="+want[0], v.Token, nil)
	if status != 200 || !slices.Equal(keys(resp["data"]), want[1:2]) {
		t.Fatalf("LIST phantom/tokens?limit=1&after=%s: %d %v", want[0], status, resp)
	}
	status, resp = v.API(t, "LIST", "phantom/tokens?limit=0", v.Token, nil)
	if status != 400 || !strings.Contains(fmt.Sprint(resp), "limit must be between 1 and 10000") {
		t.Fatalf("LIST phantom/tokens?limit=0: %d %v", status, resp)
	}
}
