package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/internal/testutil"
)

// fakeVault answers AppRole logins with numbered tokens and resolves with
// whatever resolve returns for the presented token.
type fakeVault struct {
	logins  atomic.Int64
	calls   atomic.Int64 // resolve calls, single or batched
	resolve func(token string) (int, string)

	// Vault's request forwarding header: refuseForward answers it as Vault
	// Community Edition does (and Enterprise without
	// allow_forwarding_via_header); enterprise is what sys/health says.
	refuseForward bool
	enterprise    bool
	forwarded     atomic.Int64 // resolve calls with X-Vault-Forward: active-node
	unforwarded   atomic.Int64 // resolve calls without it
	healthChecks  atomic.Int64
	healthy       bool // answer sys/health 200 (a node of a list)

	// wrapPath is the creation path of the wrapping token "wrap1", which
	// wraps the secret_id "secret" and can be unwrapped once.
	wrapPath string
	wrapUsed atomic.Bool
}

func (f *fakeVault) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if fwd := r.Header.Get("X-Vault-Forward"); fwd != "" && f.refuseForward {
		http.Error(w, `{"errors":["forwarding via header X-Vault-Forward disabled in configuration"]}`, http.StatusBadRequest)
		return
	}
	switch r.URL.Path {
	case "/v1/sys/health":
		if f.healthy {
			io.WriteString(w, `{"initialized":true,"sealed":false,"standby":false}`)
			return
		}
		if !f.refuseForward { // as sealed otherwise (TestVaultErrorsFailClosed)
			http.NotFound(w, r)
			return
		}
		f.healthChecks.Add(1)
		fmt.Fprintf(w, `{"initialized":true,"sealed":false,"standby":false,"version":"1.21.0","enterprise":%v}`, f.enterprise)
	case "/v1/sys/wrapping/lookup":
		var body map[string]string
		json.NewDecoder(r.Body).Decode(&body)
		if body["token"] != "wrap1" || f.wrapUsed.Load() || r.Header.Get("X-Vault-Token") != "" {
			http.Error(w, `{"errors":["wrapping token is not valid or does not exist"]}`, http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, `{"data":{"creation_path":%q,"creation_ttl":300,"creation_time":"2030-01-01T00:00:00Z"}}`, f.wrapPath)
	case "/v1/sys/wrapping/unwrap":
		if r.Header.Get("X-Vault-Token") != "wrap1" || f.wrapUsed.Swap(true) {
			http.Error(w, `{"errors":["wrapping token is not valid or does not exist"]}`, http.StatusBadRequest)
			return
		}
		io.WriteString(w, `{"data":{"secret_id":"secret","secret_id_accessor":"a1"}}`)
	case "/v1/auth/approle/login":
		var body map[string]string
		json.NewDecoder(r.Body).Decode(&body)
		if body["role_id"] != "role" || body["secret_id"] != "secret" {
			http.Error(w, `{"errors":["invalid role or secret ID"]}`, http.StatusBadRequest)
			return
		}
		n := f.logins.Add(1)
		fmt.Fprintf(w, `{"auth":{"client_token":"t%d","accessor":"acc%d","lease_duration":3600,"renewable":false}}`, n, n)
	case "/v1/phantom/resolve":
		if r.Method != http.MethodPatch || r.Header.Get("Content-Type") != "application/merge-patch+json" {
			http.Error(w, `{"errors":["unsupported operation"]}`, http.StatusMethodNotAllowed)
			return
		}
		if r.Header.Get("X-Vault-Forward") == "active-node" {
			f.forwarded.Add(1)
		} else {
			f.unforwarded.Add(1)
		}
		code, body := f.resolve(r.Header.Get("X-Vault-Token"))
		var in struct{ Requests []json.RawMessage }
		json.NewDecoder(r.Body).Decode(&in)
		f.calls.Add(1)
		if len(in.Requests) > 0 && code == http.StatusOK {
			// The batch form: the same decision for each request, the
			// route's grant once.
			var single struct{ Data map[string]any }
			json.Unmarshal([]byte(body), &single)
			grant := map[string]any{}
			for _, k := range []string{"upstream", "credential", "auth_type", "auth_name", "auth_format", "headers"} {
				if v, ok := single.Data[k]; ok {
					grant[k] = v
					delete(single.Data, k)
				}
			}
			results := make([]any, len(in.Requests))
			for i := range results {
				results[i] = single.Data
			}
			out, _ := json.Marshal(map[string]any{"data": map[string]any{
				"results": results, "routes": map[string]any{fmt.Sprint(single.Data["route"]): grant},
			}})
			body = string(out)
		}
		w.WriteHeader(code)
		io.WriteString(w, body)
	default:
		http.NotFound(w, r)
	}
}

const allowJSON = `{"data":{"allowed":true,"route":"r","accessor":"pha_1","upstream":"https://api.example.com","credential":"k","auth_type":"bearer","auth_name":"Authorization","auth_format":"Bearer {{credential}}","headers":{},"expires_at":"2030-01-01T00:00:00Z"}}`

func newTestResolver(t *testing.T, fv *fakeVault) *VaultResolver {
	t.Helper()
	vault := httptest.NewServer(fv)
	t.Cleanup(vault.Close)
	return newTestResolverAt(t, vault.URL)
}

// newTestResolverAt is a logged-in resolver for -vault-addr addr.
func newTestResolverAt(t *testing.T, addr string) *VaultResolver {
	t.Helper()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "role_id"), []byte("role\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "secret_id"), []byte("secret\n"), 0o600)
	v, err := NewVaultResolver(Config{
		VaultAddr: addr, RoleIDFile: filepath.Join(dir, "role_id"), SecretIDFile: filepath.Join(dir, "secret_id"),
	}, testMetrics(t), hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { v.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	testutil.Eventually(t, 5*time.Second, func() bool { return v.Ready(ctx) }, "never logged in")
	return v
}

func TestReloginOnceForManyRefusedRequests(t *testing.T) {
	fv := &fakeVault{resolve: func(tok string) (int, string) {
		if tok == "t1" { // the first token has been revoked
			return http.StatusForbidden, `{"errors":["permission denied"]}`
		}
		return http.StatusOK, allowJSON
	}}
	v := newTestResolver(t, fv)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, err := v.Resolve(context.Background(), ResolveRequest{Token: "x", Method: "GET", Path: "/"})
			if err != nil || !d.Allowed {
				failed.Add(1)
			}
		}()
	}
	wg.Wait()
	if failed.Load() != 0 || fv.logins.Load() != 2 {
		t.Fatalf("%d failed, %d logins; want 0 and 2", failed.Load(), fv.logins.Load())
	}
}

func TestRefusedFreshTokenDoesNotStormLogins(t *testing.T) {
	fv := &fakeVault{resolve: func(string) (int, string) { return http.StatusForbidden, `{"errors":["permission denied"]}` }}
	v := newTestResolver(t, fv)
	for range 50 {
		if _, err := v.Resolve(context.Background(), ResolveRequest{Token: "x", Method: "GET", Path: "/"}); err == nil {
			t.Fatal("a refused resolve succeeded")
		}
	}
	if n := fv.logins.Load(); n > 3 {
		t.Fatalf("%d logins for 50 refused requests", n)
	}
}

func TestVaultErrorsFailClosed(t *testing.T) {
	fv := &fakeVault{resolve: func(string) (int, string) { return http.StatusServiceUnavailable, `{"errors":["Vault is sealed"]}` }}
	v := newTestResolver(t, fv)
	if _, err := v.Resolve(context.Background(), ResolveRequest{Token: "x", Method: "GET", Path: "/"}); err == nil {
		t.Fatal("a sealed Vault gave a decision")
	}
	if v.Ready(context.Background()) {
		t.Fatal("ready while Vault is sealed")
	}
}

func TestParseDecision(t *testing.T) {
	parse := func(answer string) (*Decision, error) {
		var out struct{ Data *resolve.Answer }
		if err := json.Unmarshal([]byte(answer), &out); err != nil {
			return nil, err
		}
		return parseDecision(out.Data)
	}
	d, err := parse(allowJSON)
	if err != nil || !d.Allowed || d.Grant.Credential != "k" || d.Grant.Upstream.Host != "api.example.com" || d.Grant.ExpiresAt.Year() != 2030 {
		t.Fatalf("good answer: %+v %v", d, err)
	}
	for name, mutate := range map[string][2]string{
		"no allowed":        {`"allowed":true,`, ``},
		"no credential":     {`"credential":"k",`, ``},
		"bad upstream":      {`"https://api.example.com"`, `"ftp://x"`},
		"no placeholder":    {`"Bearer {{credential}}"`, `"Bearer"`},
		"bad header":        {`"headers":{}`, `"headers":{"a":1}`},
		"denial, no reason": {`"allowed":true`, `"allowed":false`},
	} {
		answer := strings.Replace(allowJSON, mutate[0], mutate[1], 1)
		if answer == allowJSON {
			t.Fatalf("%s: the mutation changed nothing", name)
		}
		if _, err := parse(answer); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if d, err := parse(`{"data":{"allowed":false,"reason":"revoked"}}`); err != nil || d.Allowed || d.Reason != "revoked" {
		t.Fatalf("denial: %+v %v", d, err)
	}
}

func TestSecretIDFileRemovedAndRemembered(t *testing.T) {
	fv := &fakeVault{resolve: func(string) (int, string) { return http.StatusOK, allowJSON }}
	vault := httptest.NewServer(fv)
	t.Cleanup(vault.Close)
	dir := t.TempDir()
	roleFile, secretFile := filepath.Join(dir, "role_id"), filepath.Join(dir, "secret_id")
	os.WriteFile(roleFile, []byte("role"), 0o600)
	os.WriteFile(secretFile, []byte("secret"), 0o600)
	v, err := NewVaultResolver(Config{VaultAddr: vault.URL, RoleIDFile: roleFile, SecretIDFile: secretFile, RemoveSecretIDFile: true}, testMetrics(t), hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if _, err := v.session.login(context.Background()); err != nil {
			t.Fatalf("login %d: %v", i, err)
		}
		if _, err := os.Stat(secretFile); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("login %d: the secret_id file is still there", i)
		}
	}
	os.WriteFile(secretFile, []byte("wrong"), 0o600) // a new file replaces the remembered value
	if _, err := v.session.login(context.Background()); err == nil || !strings.Contains(err.Error(), "invalid") {
		t.Fatalf("login with a replaced secret_id: %v", err)
	}
}

// TestBatchAnswer: a batch's decisions pair with the grants of their routes;
// an allowed decision whose route has no grant fails the whole call.
func TestBatchAnswer(t *testing.T) {
	answer := `{"data":{"results":[
		{"allowed":true,"route":"a","accessor":"pha_1","expires_at":"2030-01-01T00:00:00Z"},
		{"allowed":false,"reason":"revoked","route":"b","accessor":"pha_2"},
		{"allowed":true,"route":"c","accessor":"pha_3"}],
	"routes":{
		"a":{"upstream":"https://a.example.com","credential":"ka","auth_type":"bearer","auth_name":"Authorization","auth_format":"Bearer {{credential}}","headers":{}},
		"c":{"upstream":"https://c.example.com","credential":"kc","auth_type":"header","auth_name":"x-api-key","auth_format":"{{credential}}","headers":{"v":"1"}}}}}`
	vault := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, answer) }))
	t.Cleanup(vault.Close)
	v, err := NewVaultResolver(Config{VaultAddr: vault.URL, RoleIDFile: "x", SecretIDFile: "x"}, testMetrics(t), hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	reqs := make([]ResolveRequest, 3)
	ds, err := v.resolve.do(context.Background(), "t", reqs)
	if err != nil {
		t.Fatal(err)
	}
	if g := ds[0].Grant; !ds[0].Allowed || g.Credential != "ka" || g.Upstream.Host != "a.example.com" || g.ExpiresAt.Year() != 2030 {
		t.Errorf("first: %+v %+v", ds[0], g)
	}
	if ds[1].Allowed || ds[1].Reason != "revoked" || ds[1].Grant != nil {
		t.Errorf("second: %+v", ds[1])
	}
	if g := ds[2].Grant; g.Credential != "kc" || g.AuthName != "x-api-key" || g.Headers["v"] != "1" {
		t.Errorf("third: %+v", g)
	}

	answer = strings.Replace(answer, `"c":{`, `"d":{`, 1)
	if _, err := v.resolve.do(context.Background(), "t", reqs); err == nil || !strings.Contains(err.Error(), `no grant for route "c"`) {
		t.Fatalf("a decision without its grant: %v", err)
	}
	if _, err := v.resolve.do(context.Background(), "t", reqs[:2]); err == nil {
		t.Fatal("3 decisions for 2 requests were accepted")
	}
}

// TestResolveAsksForTheActiveNode: every resolve call, single or batched,
// carries X-Vault-Forward: active-node, so no performance standby answers
// it from storage that has not yet seen a revocation.
func TestResolveAsksForTheActiveNode(t *testing.T) {
	fv := &fakeVault{resolve: func(string) (int, string) { return http.StatusOK, allowJSON }}
	v := newTestResolver(t, fv)
	if d, err := v.Resolve(context.Background(), ResolveRequest{Token: "x", Method: "GET", Path: "/"}); err != nil || !d.Allowed {
		t.Fatalf("resolve: %+v %v", d, err)
	}
	if _, err := v.resolveMany(context.Background(), make([]ResolveRequest, 3)); err != nil {
		t.Fatalf("batch: %v", err)
	}
	if fv.forwarded.Load() != 2 || fv.unforwarded.Load() != 0 {
		t.Fatalf("%d resolve calls asked for the active node, %d did not", fv.forwarded.Load(), fv.unforwarded.Load())
	}
}

// TestForwardRefusedByCommunityEdition: Vault Community Edition refuses the
// header (its standbys forward everything anyway): the proxy checks that it
// is not Enterprise once, then resolves without the header.
func TestForwardRefusedByCommunityEdition(t *testing.T) {
	fv := &fakeVault{refuseForward: true, resolve: func(string) (int, string) { return http.StatusOK, allowJSON }}
	v := newTestResolver(t, fv)
	for range 3 {
		if d, err := v.Resolve(context.Background(), ResolveRequest{Token: "x", Method: "GET", Path: "/"}); err != nil || !d.Allowed {
			t.Fatalf("resolve: %+v %v", d, err)
		}
	}
	if fv.unforwarded.Load() != 3 || fv.healthChecks.Load() != 1 {
		t.Fatalf("%d resolve calls without the header, %d health checks; want 3 and 1", fv.unforwarded.Load(), fv.healthChecks.Load())
	}
}

// TestForwardRefusedByEnterpriseFailsClosed: Vault Enterprise without
// allow_forwarding_via_header may have performance standbys answer: the
// proxy refuses to resolve there, and says what to change.
func TestForwardRefusedByEnterpriseFailsClosed(t *testing.T) {
	fv := &fakeVault{refuseForward: true, enterprise: true, resolve: func(string) (int, string) { return http.StatusOK, allowJSON }}
	v := newTestResolver(t, fv)
	_, err := v.Resolve(context.Background(), ResolveRequest{Token: "x", Method: "GET", Path: "/"})
	if !errors.Is(err, errForwardRefused) || !strings.Contains(err.Error(), "allow_forwarding_via_header") {
		t.Fatalf("resolve on Enterprise refusing the header: %v", err)
	}
	if fv.unforwarded.Load() != 0 {
		t.Fatal("resolved without the header on Enterprise")
	}
}

// TestWrappedSecretIDCreationPath: a wrapped secret_id is unwrapped only if
// its wrapping token was created at the proxy role's secret-id path.
func TestWrappedSecretIDCreationPath(t *testing.T) {
	for _, tc := range []struct {
		name, path, role string
		ok               bool
	}{
		{"the role's secret-id", "auth/approle/role/phantom-proxy/secret-id", "", true},
		{"another mount's role", "auth/approle/role/phx-proxy/secret-id", "", false},
		{"re-wrapped by hand", "sys/wrapping/wrap", "", false},
		{"a named role", "auth/approle/role/ci-proxy/secret-id", "ci-proxy", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fv := &fakeVault{wrapPath: tc.path, resolve: func(string) (int, string) { return http.StatusOK, allowJSON }}
			vault := httptest.NewServer(fv)
			t.Cleanup(vault.Close)
			dir := t.TempDir()
			roleFile, secretFile := filepath.Join(dir, "role_id"), filepath.Join(dir, "secret_id")
			os.WriteFile(roleFile, []byte("role"), 0o600)
			os.WriteFile(secretFile, []byte("wrap1\n"), 0o600)
			v, err := NewVaultResolver(Config{VaultAddr: vault.URL, RoleIDFile: roleFile, SecretIDFile: secretFile, SecretIDWrapped: true},
				testMetrics(t), hclog.NewNullLogger(), WithAppRoleRole(tc.role))
			if err != nil {
				t.Fatal(err)
			}
			_, err = v.session.login(context.Background())
			if tc.ok != (err == nil) {
				t.Fatalf("login: %v", err)
			}
			if !tc.ok {
				if !strings.Contains(err.Error(), tc.path) || fv.wrapUsed.Load() {
					t.Fatalf("refused after unwrapping, or without saying why: %v", err)
				}
				return
			}
			// The file still holds the used-up wrapping token: a later login
			// uses the secret_id it held.
			if _, err := v.session.login(context.Background()); err != nil || fv.logins.Load() != 2 {
				t.Fatalf("second login: %v (%d logins)", err, fv.logins.Load())
			}
		})
	}
}

// TestVaultClientEnvironment: the environment cannot turn off TLS
// verification towards a Vault off loopback, nor send the calls to another
// address; an HTTP proxy in the way is logged without its password.
func TestVaultClientEnvironment(t *testing.T) {
	cfg := Config{RoleIDFile: "x", SecretIDFile: "x"}
	t.Run("skip verify off loopback", func(t *testing.T) {
		t.Setenv("VAULT_SKIP_VERIFY", "true")
		cfg := cfg
		cfg.VaultAddr = "https://vault.example.com:8200"
		if _, err := NewVaultResolver(cfg, testMetrics(t), hclog.NewNullLogger()); err == nil || !strings.Contains(err.Error(), "VAULT_SKIP_VERIFY") {
			t.Fatalf("accepted: %v", err)
		}
		for _, addr := range []string{"https://127.0.0.1:8200", "https://localhost:8200", "https://[::1]:8200"} {
			cfg.VaultAddr = addr
			if _, err := NewVaultResolver(cfg, testMetrics(t), hclog.NewNullLogger()); err != nil {
				t.Fatalf("%s: %v", addr, err)
			}
		}
	})
	t.Run("agent address ignored", func(t *testing.T) {
		other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			t.Errorf("VAULT_AGENT_ADDR received %s", r.URL.Path)
		}))
		t.Cleanup(other.Close)
		t.Setenv("VAULT_AGENT_ADDR", other.URL)
		fv := &fakeVault{resolve: func(string) (int, string) { return http.StatusOK, allowJSON }}
		v := newTestResolver(t, fv)
		if _, err := v.Resolve(context.Background(), ResolveRequest{Token: "x", Method: "GET", Path: "/"}); err != nil || fv.calls.Load() != 1 {
			t.Fatalf("resolve: %v, %d calls", err, fv.calls.Load())
		}
	})
	t.Run("proxy logged", func(t *testing.T) {
		t.Setenv("VAULT_HTTP_PROXY", "http://someone:hunter2@127.0.0.1:3128")
		var out strings.Builder
		log := hclog.New(&hclog.LoggerOptions{Output: &out})
		cfg := cfg
		cfg.VaultAddr = "https://vault.example.com:8200"
		if _, err := NewVaultResolver(cfg, testMetrics(t), log); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), "127.0.0.1:3128") || strings.Contains(out.String(), "hunter2") {
			t.Fatalf("log: %s", out.String())
		}
	})
}

func TestVaultAddrs(t *testing.T) {
	if got := VaultAddrs("http://a:8200"); len(got) != 1 || got[0] != "http://a:8200" {
		t.Fatalf("one address: %q", got)
	}
	if got := VaultAddrs(" http://a:8200 ,http://b:8200,, "); len(got) != 2 || got[1] != "http://b:8200" {
		t.Fatalf("two addresses: %q", got)
	}
}

// refusingAddr is an address nothing listens on: connections are refused.
func refusingAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := "http://" + ln.Addr().String()
	ln.Close()
	return addr
}

// nodeAnswering is a Vault node that answers every call but sys/health
// with status and errMsg, counting the calls.
func nodeAnswering(t *testing.T, status int, errMsg string, calls *atomic.Int64) string {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/sys/health" {
			calls.Add(1)
		}
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"errors":[%q]}`, errMsg)
	}))
	t.Cleanup(s.Close)
	return s.URL
}

// TestFailoverPastRefusedAndSealedNodes: a node that refuses connections
// and a sealed one (503 "Vault is sealed") did not process the call, so
// login and resolve move on to the node that serves; the refusing node is
// then skipped, and the failovers are counted per node.
func TestFailoverPastRefusedAndSealedNodes(t *testing.T) {
	var sealedCalls atomic.Int64
	refused := refusingAddr(t)
	sealed := nodeAnswering(t, http.StatusServiceUnavailable, "Vault is sealed", &sealedCalls)
	fv := &fakeVault{healthy: true, resolve: func(string) (int, string) { return http.StatusOK, allowJSON }}
	good := httptest.NewServer(fv)
	t.Cleanup(good.Close)
	v := newTestResolverAt(t, refused+","+sealed+","+good.URL)
	for range 3 {
		if d, err := v.Resolve(context.Background(), ResolveRequest{Token: "x", Method: "GET", Path: "/"}); err != nil || !d.Allowed {
			t.Fatalf("resolve: %+v %v", d, err)
		}
	}
	if fv.calls.Load() != 3 || fv.logins.Load() != 1 {
		t.Fatalf("the serving node had %d resolve calls and %d logins; want 3 and 1", fv.calls.Load(), fv.logins.Load())
	}
	if v.nodes.nodes[0].healthy.Load() || v.nodes.nodes[1].healthy.Load() || !v.nodes.nodes[2].healthy.Load() {
		t.Fatal("the refusing and sealed nodes are not marked down, or the serving one is")
	}
	if n := sealedCalls.Load(); n > 1 {
		t.Fatalf("the sealed node got %d calls once marked down; want at most the first", n)
	}
	// Failovers are counted per node. (The first health probe may mark the
	// refusing node down before the login, which then never tries it: so
	// take it for healthy and in use once more, and resolve.)
	v.nodes.nodes[0].healthy.Store(true)
	v.nodes.current.Store(0)
	if d, err := v.Resolve(context.Background(), ResolveRequest{Token: "x", Method: "GET", Path: "/"}); err != nil || !d.Allowed {
		t.Fatalf("resolve past the refusing node: %+v %v", d, err)
	}
	rec := httptest.NewRecorder()
	v.batch.metrics.handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{
		`phantom_proxy_vault_failovers_total{node="` + refused + `"}`,
		`phantom_proxy_vault_node_healthy{node="` + good.URL + `"} 1`,
		`phantom_proxy_vault_node_healthy{node="` + sealed + `"} 0`,
	} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("/metrics lacks %s:\n%s", want, rec.Body)
		}
	}
	if !v.Ready(context.Background()) {
		t.Fatal("not ready while a node serves")
	}
}

// TestCallThatReachedVaultIsNotRepeated: a call that may have reached the
// engine (the connection dropped after the request was written, or a
// standby answered that forwarding failed) fails closed and is never sent
// to another node: a num_uses token would lose a use.
func TestCallThatReachedVaultIsNotRepeated(t *testing.T) {
	for name, drop := range map[string]http.HandlerFunc{
		"connection dropped after the request": func(w http.ResponseWriter, r *http.Request) {
			io.ReadAll(r.Body)
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		},
		"forwarding to the active node failed": func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"errors":["no active Vault instance found"]}`)
		},
		"timeout": func(w http.ResponseWriter, r *http.Request) {
			io.ReadAll(r.Body)
			<-r.Context().Done()
		},
	} {
		t.Run(name, func(t *testing.T) {
			first := &fakeVault{healthy: true}
			var firstResolves atomic.Int64
			s1 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/v1/phantom/resolve" {
					firstResolves.Add(1)
					drop(w, r)
					return
				}
				first.ServeHTTP(w, r)
			}))
			t.Cleanup(s1.Close)
			other := &fakeVault{healthy: true, resolve: func(string) (int, string) { return http.StatusOK, allowJSON }}
			s2 := httptest.NewServer(other)
			t.Cleanup(s2.Close)
			v := newTestResolverAt(t, s1.URL+","+s2.URL)
			v.cfg.VaultTimeout = 300 * time.Millisecond
			v.resolve.timeout = 300 * time.Millisecond
			start := time.Now()
			if d, err := v.Resolve(context.Background(), ResolveRequest{Token: "x", Method: "GET", Path: "/"}); err == nil {
				t.Fatalf("a decision (%+v) after the call reached a node that dropped it", d)
			}
			if firstResolves.Load() != 1 || other.calls.Load() != 0 {
				t.Fatalf("%d calls on the node that got it, %d repeated on another", firstResolves.Load(), other.calls.Load())
			}
			if took := time.Since(start); took > time.Second {
				t.Fatalf("took %v, past -vault-timeout", took)
			}
		})
	}
}
