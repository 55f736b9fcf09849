package main

import (
	"strings"
	"testing"
)

func TestRunRefusesBadSettings(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"no vault", nil, []string{"-role-id-file=r", "-secret-id-file=s"}, "Vault address is required"},
		{"no approle files", nil, []string{"-vault-addr=http://127.0.0.1:8200"}, "role_id file"},
		{"half of TLS", nil, []string{"-vault-addr=x", "-role-id-file=r", "-secret-id-file=s", "-tls-cert=c"}, "certificate and a key"},
		{"bad duration in env", map[string]string{"PHANTOM_VAULT_TIMEOUT": "soon"}, nil, "PHANTOM_VAULT_TIMEOUT"},
		{"bad bool in env", map[string]string{"PHANTOM_SECRET_ID_WRAPPED": "maybe"}, nil, "PHANTOM_SECRET_ID_WRAPPED"},
		{"bad log format", nil, []string{"-log-format=xml"}, "log-format"},
		{"unknown flag", nil, []string{"-frobnicate"}, "frobnicate"},
		{"pprof off loopback", nil, []string{"-vault-addr=x", "-role-id-file=r", "-secret-id-file=s", "-pprof", "-admin-listen=0.0.0.0:9090"}, "loopback"},
		{"TLS verification off, Vault off loopback", map[string]string{"VAULT_SKIP_VERIFY": "true"}, []string{"-vault-addr=https://vault.example.com:8200", "-role-id-file=r", "-secret-id-file=s"}, "VAULT_SKIP_VERIFY"},
		{"bad forward setting", map[string]string{"PHANTOM_VAULT_FORWARD_ACTIVE": "sometimes"}, nil, "PHANTOM_VAULT_FORWARD_ACTIVE"},
		{"TLS verification off, a listed Vault off loopback", map[string]string{"VAULT_SKIP_VERIFY": "true", "VAULT_ADDR": "https://127.0.0.1:8200, https://vault.example.com:8200"}, []string{"-role-id-file=r", "-secret-id-file=s"}, "vault.example.com"},
		{"unix socket in a list", nil, []string{"-vault-addr=unix:///tmp/vault.sock,http://127.0.0.1:8200", "-role-id-file=r", "-secret-id-file=s"}, "http:// or https://"},
		{"listed Vaults differ in path", nil, []string{"-vault-addr=http://127.0.0.1:8200,http://127.0.0.1:8300/x", "-role-id-file=r", "-secret-id-file=s"}, "differ in path"},
		{"negative concurrency", nil, []string{"-vault-addr=x", "-role-id-file=r", "-secret-id-file=s", "-vault-concurrency=-1"}, "concurrency"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("VAULT_ADDR", "")
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			err := run(tc.args)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("run(%v) = %v, want an error about %q", tc.args, err, tc.want)
			}
		})
	}
}

// TestEnvironmentFillsFlags sets one setting at a time through its
// environment variable and the rest through flags, so that Validate gets
// past the check of that setting only if the variable was read: a later
// check (half of a TLS pair) is what fails then.
func TestEnvironmentFillsFlags(t *testing.T) {
	for _, tc := range []struct {
		env   string
		value string
		args  []string
		want  string // without the variable, the error is about the setting
	}{
		{"VAULT_ADDR", "http://127.0.0.1:8200", []string{"-role-id-file=r", "-secret-id-file=s", "-tls-cert=c"}, "Vault address"},
		{"PHANTOM_ROLE_ID_FILE", "r", []string{"-vault-addr=x", "-secret-id-file=s", "-tls-cert=c"}, "role_id file"},
		{"PHANTOM_SECRET_ID_FILE", "s", []string{"-vault-addr=x", "-role-id-file=r", "-tls-cert=c"}, "secret_id file"},
	} {
		t.Run(tc.env, func(t *testing.T) {
			t.Setenv("VAULT_ADDR", "")
			if err := run(tc.args); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("without %s: run = %v, want an error about %q", tc.env, err, tc.want)
			}
			t.Setenv(tc.env, tc.value)
			if err := run(tc.args); err == nil || !strings.Contains(err.Error(), "certificate and a key") {
				t.Fatalf("with %s: run = %v, want it read and the TLS pair refused", tc.env, err)
			}
		})
	}
	if err := run([]string{"-h"}); err != nil {
		t.Fatalf("-h: %v", err)
	}
}
