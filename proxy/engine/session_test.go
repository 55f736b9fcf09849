package engine

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
)

func TestSecretIDFileRemovedAndRemembered(t *testing.T) {
	fv := &fakeVault{resolve: func(string) (int, string) { return http.StatusOK, allowJSON }}
	vault := httptest.NewServer(fv)
	t.Cleanup(vault.Close)
	dir := t.TempDir()
	roleFile, secretFile := filepath.Join(dir, "role_id"), filepath.Join(dir, "secret_id")
	os.WriteFile(roleFile, []byte("role"), 0o600)
	os.WriteFile(secretFile, []byte("secret"), 0o600)
	v, err := New(Config{Addr: vault.URL, RoleIDFile: roleFile, SecretIDFile: secretFile, RemoveSecretIDFile: true}, testMetrics(t), hclog.NewNullLogger())
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
			v, err := New(Config{Addr: vault.URL, RoleIDFile: roleFile, SecretIDFile: secretFile, SecretIDWrapped: true},
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
