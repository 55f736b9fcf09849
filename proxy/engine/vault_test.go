package engine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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

// recorder keeps what the client records of its nodes, for tests to read.
type recorder struct {
	mu        sync.Mutex
	healthy   map[string]bool // node -> serving, as last recorded
	failovers map[string]int  // node -> calls moved away from it
}

func testMetrics(testing.TB) *recorder {
	return &recorder{healthy: map[string]bool{}, failovers: map[string]int{}}
}

func (r *recorder) Login(string)       {}
func (r *recorder) Authenticated(bool) {}
func (r *recorder) BatchSize(int)      {}

func (r *recorder) NodeHealthy(node string, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.healthy[node] = ok
}

func (r *recorder) Failover(node string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failovers[node]++
}

func newTestResolver(t *testing.T, fv *fakeVault) *Vault {
	t.Helper()
	vault := httptest.NewServer(fv)
	t.Cleanup(vault.Close)
	return newTestResolverAt(t, vault.URL)
}

// newTestResolverAt is a logged-in resolver for -vault-addr addr.
func newTestResolverAt(t *testing.T, addr string) *Vault {
	t.Helper()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "role_id"), []byte("role\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "secret_id"), []byte("secret\n"), 0o600)
	v, err := New(Config{
		Addr: addr, RoleIDFile: filepath.Join(dir, "role_id"), SecretIDFile: filepath.Join(dir, "secret_id"),
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
			d, err := v.Resolve(context.Background(), resolve.Request{Token: "x", Method: "GET", Path: "/"})
			if err != nil || !*d.Allowed {
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
		if _, err := v.Resolve(context.Background(), resolve.Request{Token: "x", Method: "GET", Path: "/"}); err == nil {
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
	if _, err := v.Resolve(context.Background(), resolve.Request{Token: "x", Method: "GET", Path: "/"}); err == nil {
		t.Fatal("a sealed Vault gave a decision")
	}
	if v.Ready(context.Background()) {
		t.Fatal("ready while Vault is sealed")
	}
}

// TestResolveAsksForTheActiveNode: every resolve call, single or batched,
// carries X-Vault-Forward: active-node, so no performance standby answers
// it from storage that has not yet seen a revocation.
func TestResolveAsksForTheActiveNode(t *testing.T) {
	fv := &fakeVault{resolve: func(string) (int, string) { return http.StatusOK, allowJSON }}
	v := newTestResolver(t, fv)
	if d, err := v.Resolve(context.Background(), resolve.Request{Token: "x", Method: "GET", Path: "/"}); err != nil || !*d.Allowed {
		t.Fatalf("resolve: %+v %v", d, err)
	}
	if _, err := v.resolveMany(context.Background(), make([]resolve.Request, 3)); err != nil {
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
		if d, err := v.Resolve(context.Background(), resolve.Request{Token: "x", Method: "GET", Path: "/"}); err != nil || !*d.Allowed {
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
	_, err := v.Resolve(context.Background(), resolve.Request{Token: "x", Method: "GET", Path: "/"})
	if !errors.Is(err, errForwardRefused) || !strings.Contains(err.Error(), "allow_forwarding_via_header") {
		t.Fatalf("resolve on Enterprise refusing the header: %v", err)
	}
	if fv.unforwarded.Load() != 0 {
		t.Fatal("resolved without the header on Enterprise")
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
		cfg.Addr = "https://vault.example.com:8200"
		if _, err := New(cfg, testMetrics(t), hclog.NewNullLogger()); err == nil || !strings.Contains(err.Error(), "VAULT_SKIP_VERIFY") {
			t.Fatalf("accepted: %v", err)
		}
		for _, addr := range []string{"https://127.0.0.1:8200", "https://localhost:8200", "https://[::1]:8200"} {
			cfg.Addr = addr
			if _, err := New(cfg, testMetrics(t), hclog.NewNullLogger()); err != nil {
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
		if _, err := v.Resolve(context.Background(), resolve.Request{Token: "x", Method: "GET", Path: "/"}); err != nil || fv.calls.Load() != 1 {
			t.Fatalf("resolve: %v, %d calls", err, fv.calls.Load())
		}
	})
	t.Run("proxy logged", func(t *testing.T) {
		t.Setenv("VAULT_HTTP_PROXY", "http://someone:hunter2@127.0.0.1:3128")
		var out strings.Builder
		log := hclog.New(&hclog.LoggerOptions{Output: &out})
		cfg := cfg
		cfg.Addr = "https://vault.example.com:8200"
		if _, err := New(cfg, testMetrics(t), log); err != nil {
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

// Vault.CheckTunnel goes through the batcher: with the default
// -vault-concurrency of 1, CONNECT checks and resolves never reach Vault two
// at a time.
func TestVaultTunnelChecksShareTheConcurrency(t *testing.T) {
	fv := &fakeVault{resolve: func(string) (int, string) { return http.StatusOK, allowJSON }}
	var inFlight, most, checks atomic.Int64
	vault := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/v1/phantom/") {
			n := inFlight.Add(1)
			defer inFlight.Add(-1)
			for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
			}
			time.Sleep(2 * time.Millisecond)
		}
		if r.URL.Path == "/v1/phantom/tunnel" {
			checks.Add(1)
			io.WriteString(w, `{"data":{"allowed":false,"reason":"origin_not_allowed"}}`)
			return
		}
		fv.ServeHTTP(w, r)
	}))
	t.Cleanup(vault.Close)
	v := newTestResolverAt(t, vault.URL)
	var wg sync.WaitGroup
	errs := make(chan error, 80)
	for i := range 40 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			a, err := v.CheckTunnel(context.Background(), resolve.TunnelRequest{Origin: fmt.Sprintf("h%d.example:443", i), ClientIP: "192.0.2.1"})
			if err == nil && *a.Allowed {
				err = errors.New("allowed")
			}
			errs <- err
		}()
		go func() {
			defer wg.Done()
			_, err := v.Resolve(context.Background(), resolve.Request{Token: "phm_x", Method: "GET", Path: "/v1/x", ClientIP: "192.0.2.1"})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if m := most.Load(); m != 1 {
		t.Fatalf("%d calls to Vault at once with -vault-concurrency 1", m)
	}
	if n := checks.Load(); n != 40 {
		t.Fatalf("%d tunnel calls for 40 distinct checks", n)
	}
}
