package e2e

import (
	"crypto/rand"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/phantomvault/phantom/e2e/harness"
	"github.com/phantomvault/phantom/internal/testutil"
	"github.com/phantomvault/phantom/internal/token"
)

// adminKey is a key the route admin owns: binding a route to it is fine.
const adminKey = "sk_live_51E2Eadmin0own0key0not0the0real0one"

// policyToken creates a Vault token holding only the named policies.
func policyToken(t *testing.T, v *harness.Vault, policies ...string) string {
	t.Helper()
	args := []string{"token", "create", "-field=token"}
	for _, p := range policies {
		args = append(args, "-policy="+p)
	}
	return strings.TrimSpace(v.MustCLI(t, args...))
}

// as runs the vault CLI with tok and JSON output; err is the CLI's failure.
func as(t *testing.T, v *harness.Vault, tok string, args ...string) (map[string]any, string, error) {
	t.Helper()
	out, errOut, err := v.RunAs(t, tok, "json", "", args...)
	if err != nil {
		return nil, out + errOut, err
	}
	var m map[string]any
	if strings.TrimSpace(out) != "" {
		if err := json.Unmarshal([]byte(out), &m); err != nil {
			t.Fatalf("vault %s: not JSON: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	return m, errOut, nil
}

// TestRouteAdminCannotCollectTheCredential: the phantom-admin policy may
// update routes but must never learn a credential. Re-pointing a route, or
// changing how its key is sent, without sending the key again is a 400, and
// the next agent call still delivers the key only to the real upstream.
func TestRouteAdminCannotCollectTheCredential(t *testing.T) {
	v := harness.StartDevVault(t)
	up := startUpstream(t, realKey)
	collector := startRecordingAPI(t) // the admin's own host
	v.MustCLI(t, "write", "phantom/routes/pay", "upstream="+up.URL, "allowed_paths=/v1/**", "allowed_methods=GET",
		"credential="+realKey, "headers=X-Tenant=acme")
	p := harness.StartProxy(t, v)
	admin := policyToken(t, v, "phantom-admin")
	tok, _ := v.Mint(t, "pay")
	refused := func(attempt ...string) {
		t.Helper()
		args := append([]string{"write", "phantom/routes/pay"}, attempt...)
		_, out, err := as(t, v, admin, args...)
		if err == nil || !strings.Contains(out, "Code: 400") || !strings.Contains(out, "send credential again") {
			t.Errorf("admin: vault write phantom/routes/pay %s: want a 400 asking for the credential, got err=%v\n%s",
				strings.Join(attempt, " "), err, out)
		}
	}

	// The attack as reported: re-point, wait for the next agent call.
	refused("upstream=" + collector.URL)
	if code, body := p.Call(t, "GET", "/v1/customers", tok); code != 200 {
		t.Fatalf("agent call: %d %s", code, body)
	}
	if got := collector.Log(); got != "" {
		t.Fatalf("the admin's host received the agent's call (real key included: %v):\n%s",
			strings.Contains(got, realKey), strings.ReplaceAll(got, realKey, "<the real key>"))
	}

	for _, attempt := range [][]string{
		{"upstream=" + collector.URL, "allowed_methods=GET"}, // hidden in a larger write
		{"upstream=" + up.URL + "/tenant-b"},                 // the path prefix picks the tenant on shared hosts
		{"auth_type=query", "auth_query_param=key"},          // into URLs and access logs
		{"auth_type=header", "auth_header=X-Echo"},           // into a header the upstream reflects
		{"headers=X-Tenant=attacker"},                        // a header can pick the backend behind a front end
		{"allow_http=true"},
	} {
		refused(attempt...)
	}
	route := v.JSON(t, "read", "phantom/routes/pay")["data"].(map[string]any)
	if route["upstream"] != up.URL || route["auth_type"] != "bearer" || route["headers"].(map[string]any)["X-Tenant"] != "acme" {
		t.Fatalf("a refused update changed the route: %v", route)
	}

	// The admin keeps its real powers: scope changes need no credential.
	if _, out, err := as(t, v, admin, "write", "phantom/routes/pay", "allowed_methods=GET,POST"); err != nil {
		t.Fatalf("admin scope update: %v\n%s", err, out)
	}
	if code, body := p.Call(t, "GET", "/v1/customers", tok); code != 200 || collector.Count() != 0 {
		t.Fatalf("agent call: %d %s; the admin's host got %d requests", code, body, collector.Count())
	}

	// With a key of its own in the same write, the admin may re-point the
	// route: the real key is gone from it, so nothing is collected.
	if _, out, err := as(t, v, admin, "write", "phantom/routes/pay", "upstream="+collector.URL, "credential="+adminKey); err != nil {
		t.Fatalf("re-point with a credential: %v\n%s", err, out)
	}
	if code, body := p.Call(t, "GET", "/v1/customers", tok); code != 200 {
		t.Fatalf("agent call after the re-point: %d %s", code, body)
	}
	if got := collector.Log(); !strings.Contains(got, "Bearer "+adminKey) || strings.Contains(got, realKey) {
		t.Fatalf("after a re-point with the admin's own key the collector got:\n%s", strings.ReplaceAll(got, realKey, "<the real key>"))
	}
}

// TestLeaseRenewalBoundedAtMint: any token may renew a lease whose ID it
// knows (Vault's default policy grants sys/leases/renew), so a phantom
// token's whole life is fixed when it is minted: its ttl, or the max_ttl the
// mint asked for, never past the route's max_ttl, which defaults to 24h
// rather than the mount's 768h. Nor may a renewal shorten a token.
func TestLeaseRenewalBoundedAtMint(t *testing.T) {
	v := harness.StartDevVault(t)
	upstreamRoute(t, v, "demo")
	p := harness.StartProxy(t, v)
	issuer := policyToken(t, v, "phantom-issuer")
	stranger := policyToken(t, v, "default") // holds nothing of Phantom's

	mint := func(args ...string) (tok, leaseID, accessor string) {
		t.Helper()
		lease, out, err := as(t, v, issuer, append([]string{"read", "phantom/token/demo"}, args...)...)
		if err != nil {
			t.Fatalf("mint %v: %v\n%s", args, err, out)
		}
		d := lease["data"].(map[string]any)
		return d["token"].(string), lease["lease_id"].(string), d["accessor"].(string)
	}
	renew := func(leaseID, increment string) float64 {
		t.Helper()
		lease, out, err := as(t, v, stranger, "lease", "renew", "-increment="+increment, leaseID)
		if err != nil {
			t.Fatalf("the stranger's renew: %v\n%s", err, out)
		}
		return lease["lease_duration"].(float64)
	}
	expiresIn := func(accessor string) time.Duration {
		t.Helper()
		info := v.JSON(t, "read", "phantom/tokens/"+accessor)["data"].(map[string]any)
		at, err := time.Parse(time.RFC3339, info["expires_at"].(string))
		if err != nil {
			t.Fatal(err)
		}
		return time.Until(at)
	}

	// Minted for 8s: a stranger asking for 768h gets no more than 8s.
	shortMinted := time.Now()
	short, shortLease, shortAcc := mint("ttl=8s")
	if d := renew(shortLease, "768h"); d > 8 {
		t.Errorf("an 8s token renewed by a stranger to %vs", d)
	}
	if d := expiresIn(shortAcc); d > 8*time.Second {
		t.Errorf("the 8s token now expires in %v", d)
	}

	// Minted with room to renew: renewals reach max_ttl and stop there.
	roomy, roomyLease, roomyAcc := mint("ttl=8s", "max_ttl=90s")
	if d := renew(roomyLease, "768h"); d < 70 || d > 90 {
		t.Errorf("a token minted with max_ttl=90s renewed to %vs", d)
	}
	// A stranger's 1s increment cannot cut it short: Vault would set the
	// lease to 1s and revoke it, so the engine refuses.
	if _, out, err := as(t, v, stranger, "lease", "renew", "-increment=1s", roomyLease); err == nil || !strings.Contains(out, "never shortens") {
		t.Errorf("a stranger's 1s renewal: err=%v\n%s", err, out)
	}
	if d := expiresIn(roomyAcc); d < 70*time.Second {
		t.Errorf("the roomy token now expires in %v", d)
	}

	// Asking for more than the route's max_ttl (here the engine's 24h
	// default, not the mount's 768h) is capped at mint.
	_, longLease, longAcc := mint("ttl=1h", "max_ttl=768h")
	if d := renew(longLease, "768h"); d > 24*3600 {
		t.Errorf("a token renewed to %vs, past the default max_ttl of 24h", d)
	}
	if d := expiresIn(longAcc); d > 24*time.Hour {
		t.Errorf("the token now expires in %v", d)
	}

	// Through the proxy: the short token dies on time, the roomy one lives.
	time.Sleep(time.Until(shortMinted.Add(9 * time.Second)))
	if code, body := p.Call(t, "GET", "/v1/customers", short); code != 401 {
		t.Errorf("the 8s token after 9s, renewed by a stranger: %d %s", code, body)
	}
	if code, body := p.Call(t, "GET", "/v1/customers", roomy); code != 200 {
		t.Errorf("the renewed roomy token: %d %s", code, body)
	}
}

// TestMintRefusesEmptyNarrowing: a CI script whose variable came out empty
// must get a 400, not the route's widest token.
func TestMintRefusesEmptyNarrowing(t *testing.T) {
	v := harness.StartDevVault(t)
	v.MustCLI(t, "write", "phantom/routes/demo", "upstream=https://api.example.com", "allowed_paths=/v1/customers/**,/v1/charges/**",
		"allowed_methods=GET,POST", "credential="+realKey)
	issuer := policyToken(t, v, "phantom-issuer")

	for _, args := range [][]string{
		{"read", "phantom/token/demo", "allowed_paths="},
		{"write", "phantom/token/demo", "allowed_paths="},
		{"read", "phantom/token/demo", "allowed_paths= , "},
		{"read", "phantom/token/demo", "allowed_methods=,"},
		{"write", "phantom/token/demo", "allowed_methods= "},
		{"read", "phantom/token/demo", "bound_cidrs="},
		{"write", "phantom/token/demo", "allowed_paths=/v1/customers/**", "bound_cidrs=,"},
	} {
		_, out, err := as(t, v, issuer, args...)
		if err == nil || !strings.Contains(out, "Code: 400") || !strings.Contains(out, "was given but is empty") {
			t.Errorf("issuer: vault %s: want a 400, got err=%v\n%s", strings.Join(args, " "), err, out)
		}
	}
	out, _, err := v.RunAs(t, v.Token, "json", "", "list", "phantom/tokens")
	var accessors []string
	json.Unmarshal([]byte(out), &accessors)
	if err == nil && len(accessors) != 0 {
		t.Fatalf("refused mints left %d tokens", len(accessors))
	}
	// A real narrowing still works.
	lease, out2, err := as(t, v, issuer, "read", "phantom/token/demo", "allowed_paths=/v1/customers/*", "allowed_methods=GET")
	if err != nil {
		t.Fatalf("narrow mint: %v\n%s", err, out2)
	}
	if got, _ := lease["data"].(map[string]any)["allowed_methods"].([]any); len(got) != 1 || got[0] != "GET" {
		t.Fatalf("narrow mint methods: %v", got)
	}
}

// vaultCall sends one Vault HTTP API request with the root token and decodes
// the JSON answer.
func vaultCall(t *testing.T, v *harness.Vault, method, path string, body any) map[string]any {
	t.Helper()
	code, m := v.API(t, method, path, v.Token, body)
	if code != 200 || m == nil {
		t.Fatalf("%s %s: %d %v", method, path, code, m)
	}
	return m
}

// barrierGets returns Vault's storage reads (vault.barrier.get) in its last
// finished 10-second metrics interval, and that interval's start.
func barrierGets(t *testing.T, v *harness.Vault) (interval string, gets float64) {
	t.Helper()
	m := vaultCall(t, v, http.MethodGet, "sys/metrics", nil)
	interval, _ = m["Timestamp"].(string)
	samples, _ := m["Samples"].([]any)
	for _, s := range samples {
		if s, ok := s.(map[string]any); ok && s["Name"] == "vault.barrier.get" {
			gets, _ = s["Count"].(float64)
		}
	}
	return interval, gets
}

// nextInterval waits until Vault's metrics move to a new interval and
// returns the one that just finished.
func nextInterval(t *testing.T, v *harness.Vault, after string) (string, float64) {
	t.Helper()
	var interval string
	var gets float64
	testutil.Eventually(t, 25*time.Second, func() bool { interval, gets = barrierGets(t, v); return interval != after },
		"Vault's metrics interval did not move")
	return interval, gets
}

// TestForgedTokensCostNoStorageReads: anyone can forge well-formed tokens
// (the checksum is public). The engine remembers unknown tokens, so
// repeating one costs Vault no storage read after the first, counted by
// Vault's own vault.barrier.get metric; and a token minted afterwards works
// at once through the proxy.
func TestForgedTokensCostNoStorageReads(t *testing.T) {
	v := harness.StartDevVault(t)
	upstreamRoute(t, v, "demo")
	forged, err := token.New(rand.Reader, token.DefaultPrefix)
	if err != nil {
		t.Fatal(err)
	}
	const calls = 4
	batch := make([]any, 256)
	for i := range batch {
		batch[i] = map[string]any{"token": forged, "method": "GET", "path": "/v1/customers", "client_ip": "127.0.0.1"}
	}

	// Start at the beginning of an interval, send the batches, and read
	// that interval once it is finished.
	idle, _ := barrierGets(t, v)
	idle, _ = nextInterval(t, v, idle)
	for range calls {
		results := vaultCall(t, v, http.MethodPatch, "phantom/resolve", map[string]any{"requests": batch})["data"].(map[string]any)["results"].([]any)
		for _, r := range results {
			if r.(map[string]any)["reason"] != "unknown_token" {
				t.Fatalf("a forged token: %v", r)
			}
		}
	}
	_, gets := nextInterval(t, v, idle)
	t.Logf("%d resolves of one forged token in %d calls: %v storage reads in Vault", calls*len(batch), calls, gets)
	// Vault reads the calling token once per call, and the engine reads
	// the forged one once; without the negative cache it is once per resolve.
	if gets > 100 {
		t.Fatalf("%d resolves of one forged token cost %v storage reads", calls*len(batch), gets)
	}

	p := harness.StartProxy(t, v)
	if code, body := p.Call(t, "GET", "/v1/customers", forged); code != 401 {
		t.Fatalf("the forged token through the proxy: %d %s", code, body)
	}
	tok, _ := v.Mint(t, "demo")
	if code, body := p.Call(t, "GET", "/v1/customers", tok); code != 200 {
		t.Fatalf("a token minted after the flood: %d %s", code, body)
	}
}
