package proxy

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
)

// fakeVault answers AppRole logins with numbered tokens and resolves with
// whatever resolve returns for the presented token.
type fakeVault struct {
	logins  atomic.Int64
	calls   atomic.Int64 // resolve calls, single or batched
	resolve func(token string) (int, string)
}

func (f *fakeVault) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
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
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "role_id"), []byte("role\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "secret_id"), []byte("secret\n"), 0o600)
	v, err := NewVaultResolver(Config{
		VaultAddr: vault.URL, RoleIDFile: filepath.Join(dir, "role_id"), SecretIDFile: filepath.Join(dir, "secret_id"),
	}, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { v.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	deadline := time.Now().Add(5 * time.Second)
	for !v.Ready(ctx) {
		if time.Now().After(deadline) {
			t.Fatal("never logged in")
		}
		time.Sleep(10 * time.Millisecond)
	}
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
		var out struct{ Data *resolveAnswer }
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
	v, err := NewVaultResolver(Config{VaultAddr: vault.URL, RoleIDFile: roleFile, SecretIDFile: secretFile, RemoveSecretIDFile: true}, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if _, err := v.login(context.Background()); err != nil {
			t.Fatalf("login %d: %v", i, err)
		}
		if _, err := os.Stat(secretFile); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("login %d: the secret_id file is still there", i)
		}
	}
	os.WriteFile(secretFile, []byte("wrong"), 0o600) // a new file replaces the remembered value
	if _, err := v.login(context.Background()); err == nil || !strings.Contains(err.Error(), "invalid") {
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
	v, err := NewVaultResolver(Config{VaultAddr: vault.URL, RoleIDFile: "x", SecretIDFile: "x"}, hclog.NewNullLogger())
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
