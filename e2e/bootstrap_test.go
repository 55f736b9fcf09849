package e2e

import (
	"strings"
	"testing"

	"github.com/phantomvault/phantom/e2e/harness"
)

// otherKey is the real key behind the second mount's route.
const otherKey = "sk_live_SecondMountKey0123456789"

// TestMountsSideBySide installs Phantom twice in one Vault (phantom/ and
// phx/, as two teams would), each with its own proxy: installing the second
// leaves the first proxy serving, each proxy resolves on its own mount only,
// each admin revokes on its own mount only, and revoking everything of a
// route on one mount leaves the other's tokens working.
func TestMountsSideBySide(t *testing.T) {
	v := harness.StartDevVault(t)
	upA, upB := startUpstream(t, realKey), startUpstream(t, otherKey)
	writeRoute(t, v, "demo", upA.URL)
	pA := harness.StartProxy(t, v)
	tokA, leaseA := v.Mint(t, "demo")
	if code, body := pA.Call(t, "GET", "/v1/customers", tokA); code != 200 {
		t.Fatalf("phantom/ before phx/ exists: %d %s", code, body)
	}

	phx := v.BootstrapMount(t, "phx")
	// The first proxy keeps its policy: no 403, no outage.
	if code, body := pA.Call(t, "GET", "/v1/customers", tokA); code != 200 {
		t.Fatalf("phantom/ once phx/ is installed: %d %s\n%s", code, body, pA.Out)
	}
	if !strings.Contains(phx.Output, "policies phx-admin, phx-issuer (routes: *), phx-proxy for phx/") ||
		!strings.Contains(phx.Output, "AppRole role phx-proxy") {
		t.Fatalf("the second mount's names:\n%s", phx.Output)
	}
	v.MustCLI(t, "write", "phx/routes/demo", "upstream="+upB.URL, "allowed_paths=/v1/**", "allowed_methods=GET", "credential="+otherKey)
	pB := harness.StartProxy(t, v, phx.ProxyArgs()...)
	tokB, _ := v.MintOn(t, "phx", "demo")
	tokB2, _ := v.MintOn(t, "phx", "demo")
	for _, c := range []struct {
		name  string
		p     *harness.Proxy
		tok   string
		want  int
		check string
	}{
		{"phantom/ token, phantom/ proxy", pA, tokA, 200, ""},
		{"phx/ token, phx/ proxy", pB, tokB, 200, ""},
		{"phx/ token, phantom/ proxy", pA, tokB, 401, "unknown"},
		{"phantom/ token, phx/ proxy", pB, tokA, 401, "unknown"},
	} {
		if code, body := c.p.Call(t, "GET", "/v1/customers", c.tok); code != c.want || !strings.Contains(body, c.check) {
			t.Errorf("%s: %d %s", c.name, code, body)
		}
	}

	token := func(policy string) string {
		return strings.TrimSpace(v.MustCLI(t, "token", "create", "-policy="+policy, "-field=token"))
	}
	proxyA := v.AppRoleLogin(t, v.RoleIDFile, v.SecretIDFile)
	proxyB := v.AppRoleLogin(t, phx.RoleIDFile, phx.SecretIDFile)
	adminA, adminB := token("phantom-admin"), token("phx-admin")
	issuerA, issuerB := token("phantom-issuer"), token("phx-issuer")
	resolve := func(mount, tok string) []string {
		return []string{"patch", mount + "/resolve", "token=" + tok, "method=GET", "path=/v1/x", "client_ip=127.0.0.1"}
	}
	_, leaseB2 := v.MintOn(t, "phx", "demo")
	for _, c := range []struct {
		who, token string
		args       []string
		allowed    bool
	}{
		{"phantom/ proxy", proxyA, resolve("phantom", tokA), true},
		{"phantom/ proxy", proxyA, resolve("phx", tokB), false},
		{"phx/ proxy", proxyB, resolve("phx", tokB), true},
		{"phx/ proxy", proxyB, resolve("phantom", tokA), false},
		{"phantom/ issuer", issuerA, []string{"read", "phantom/token/demo"}, true},
		{"phantom/ issuer", issuerA, []string{"read", "phx/token/demo"}, false},
		{"phx/ issuer", issuerB, []string{"read", "phx/token/demo"}, true},
		{"phx/ issuer", issuerB, []string{"read", "phantom/token/demo"}, false},
		{"phx/ admin", adminB, []string{"lease", "revoke", "-sync", "-prefix", "phantom/token/demo"}, false},
		{"phx/ admin", adminB, []string{"lease", "revoke", "-sync", leaseA}, false},
		{"phx/ admin", adminB, []string{"read", "phantom/routes/demo"}, false},
		{"phantom/ admin", adminA, []string{"lease", "revoke", "-sync", "-prefix", "phx/token/demo"}, false},
		{"phantom/ admin", adminA, []string{"lease", "revoke", "-sync", leaseB2}, false},
		{"phantom/ admin", adminA, []string{"list", "phx/tokens"}, false},
		{"phx/ admin", adminB, []string{"lease", "revoke", "-sync", leaseB2}, true},
	} {
		out, errOut, err := v.RunAs(t, c.token, "table", "", c.args...)
		if allowed := err == nil; allowed != c.allowed {
			t.Errorf("%s: vault %s: allowed=%v, want %v\n%s%s", c.who, strings.Join(c.args, " "), allowed, c.allowed, out, errOut)
		} else if !c.allowed && !strings.Contains(errOut, "permission denied") {
			t.Errorf("%s: vault %s failed for another reason:\n%s", c.who, strings.Join(c.args, " "), errOut)
		}
	}

	// phx/'s admin kills every token of its route; phantom/'s live on.
	if _, errOut, err := v.RunAs(t, adminB, "table", "", "lease", "revoke", "-sync", "-prefix", "phx/token/demo"); err != nil {
		t.Fatalf("phx/ admin revoking by prefix on phx/: %s", errOut)
	}
	for _, tok := range []string{tokB, tokB2} {
		if code, body := pB.Call(t, "GET", "/v1/customers", tok); code != 401 || !strings.Contains(body, "revoked") {
			t.Errorf("a revoked phx/ token: %d %s", code, body)
		}
	}
	if code, body := pA.Call(t, "GET", "/v1/customers", tokA); code != 200 {
		t.Errorf("phantom/ after phx/'s revocation: %d %s", code, body)
	}
	if _, errOut, err := v.RunAs(t, adminA, "table", "", "lease", "revoke", "-sync", "-prefix", "phantom/token/demo"); err != nil {
		t.Fatalf("phantom/ admin revoking by prefix on phantom/: %s", errOut)
	}
	if code, _ := pA.Call(t, "GET", "/v1/customers", tokA); code != 401 {
		t.Errorf("a revoked phantom/ token: %d", code)
	}
	fresh, _ := v.MintOn(t, "phx", "demo")
	if code, body := pB.Call(t, "GET", "/v1/customers", fresh); code != 200 {
		t.Errorf("a fresh phx/ token after phantom/'s revocation: %d %s", code, body)
	}

	// Names that another mount's install holds are refused before anything
	// is written: a mount whose derived name is taken, and an explicit name.
	before := v.MustCLI(t, "policy", "read", "phx-proxy")
	for _, env := range [][]string{
		{"PHANTOM_MOUNT=PHX"},
		{"PHANTOM_MOUNT=phy", "PHANTOM_NAME=phantom"},
	} {
		out, err := v.RunBootstrap(t, nil, append(env, "PHANTOM_OUT_DIR="+t.TempDir())...)
		if err == nil || !strings.Contains(out, "is not for") {
			t.Errorf("bootstrap %v over another mount's names: %v\n%s", env, err, out)
		}
	}
	if after := v.MustCLI(t, "policy", "read", "phx-proxy"); after != before {
		t.Errorf("a refused bootstrap changed phx-proxy:\n%s", after)
	}
	if code, _ := pB.Call(t, "GET", "/v1/customers", fresh); code != 200 {
		t.Errorf("phx/ after the refused bootstraps: %d", code)
	}
}

// TestIssuerRoutePatterns: PHANTOM_ISSUER_ROUTES admits route names and
// delimiter-ended prefixes, so team-a-* grants team-a-x and never
// team-admin; a raw prefix (team-a*) and a "*" anywhere but the end are
// refused, and a refused run leaves the policy as it was.
func TestIssuerRoutePatterns(t *testing.T) {
	v := harness.StartDevVault(t)
	before := v.MustCLI(t, "policy", "read", "phantom-issuer")
	for pattern, why := range map[string]string{
		"team-a*":    `write "team-a-*"`,
		"stripe*":    `write "stripe-*"`,
		"te*am":      "only at the end",
		"*-a":        "only at the end",
		"team-a-**":  "only at the end",
		"team/a-*":   "not a route name",
		"team-a-+":   "not a route name",
		"-team":      "not a route name",
		"billing,t*": `write "t-*"`,
		"":           "names no route", // an empty CI variable must not mean every route
		" , ":        "names no route",
	} {
		out, err := v.RunBootstrap(t, nil, "PHANTOM_ISSUER_ROUTES="+pattern, "PHANTOM_OUT_DIR="+t.TempDir())
		if err == nil || !strings.Contains(out, why) {
			t.Errorf("PHANTOM_ISSUER_ROUTES=%s: %v, want a refusal saying %q:\n%s", pattern, err, why, out)
		}
	}
	if after := v.MustCLI(t, "policy", "read", "phantom-issuer"); after != before {
		t.Fatalf("a refused bootstrap changed phantom-issuer:\n%s", after)
	}

	v.Bootstrap(t, "PHANTOM_ISSUER_ROUTES=team-a-*,billing,eu.*")
	for _, route := range []string{"team-a-x", "team-a-x-y", "team-admin", "team-analytics", "team-a", "billing", "billing-eu", "eu.payments", "eu-payments"} {
		v.MustCLI(t, "write", "phantom/routes/"+route, "upstream=https://api.example.com",
			"allowed_paths=/v1/**", "allowed_methods=GET", "credential="+realKey)
	}
	issuer := strings.TrimSpace(v.MustCLI(t, "token", "create", "-policy=phantom-issuer", "-field=token"))
	for route, allowed := range map[string]bool{
		"team-a-x": true, "team-a-x-y": true, "billing": true, "eu.payments": true,
		"team-admin": false, "team-analytics": false, "team-a": false, "billing-eu": false, "eu-payments": false,
	} {
		_, errOut, err := v.RunAs(t, issuer, "table", "", "read", "phantom/token/"+route)
		if (err == nil) != allowed {
			t.Errorf("issuer minting for %s: allowed=%v, want %v %s", route, err == nil, allowed, errOut)
		}
	}
}
