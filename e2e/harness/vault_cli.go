package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Run runs the vault CLI as a user would, with the root token.
func (v *Vault) Run(t testing.TB, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	return v.RunAs(t, v.Token, "table", "", args...)
}

// RunAs runs the vault CLI with another token, output format and stdin.
func (v *Vault) RunAs(t testing.TB, token, format, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, v.tools.Vault, args...)
	cmd.Env = append(os.Environ(), "VAULT_ADDR="+v.Addr, "VAULT_TOKEN="+token, "HOME="+v.Home, "VAULT_FORMAT="+format)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// MustCLI runs the vault CLI and fails the test if it fails.
func (v *Vault) MustCLI(t testing.TB, args ...string) string {
	t.Helper()
	out, errOut, err := v.Run(t, args...)
	if err != nil {
		t.Fatalf("vault %s: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// JSON runs the vault CLI with JSON output and decodes it.
func (v *Vault) JSON(t testing.TB, args ...string) map[string]any {
	t.Helper()
	out, errOut, err := v.RunAs(t, v.Token, "json", "", args...)
	if err != nil {
		t.Fatalf("vault %s: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("vault %s: not JSON: %v\n%s", strings.Join(args, " "), err, out)
	}
	return m
}

// Mint mints a token for route and returns it with its lease id.
func (v *Vault) Mint(t testing.TB, route string, args ...string) (token, leaseID string) {
	t.Helper()
	return v.MintOn(t, "phantom", route, args...)
}

// MintOn mints a token for route of the engine at mount.
func (v *Vault) MintOn(t testing.TB, mount, route string, args ...string) (token, leaseID string) {
	t.Helper()
	lease := v.JSON(t, append([]string{"read", mount + "/token/" + route}, args...)...)
	return lease["data"].(map[string]any)["token"].(string), lease["lease_id"].(string)
}

// MintAccessor mints a token for route and returns it with its accessor.
func (v *Vault) MintAccessor(t testing.TB, route string, args ...string) (token, accessor string) {
	t.Helper()
	data := v.JSON(t, append([]string{"read", "phantom/token/" + route}, args...)...)["data"].(map[string]any)
	return data["token"].(string), data["accessor"].(string)
}

// API sends one request to Vault's HTTP API (path under /v1/) with token,
// body as JSON unless nil (a PATCH as a merge patch), and returns the status
// and the decoded answer, nil when it is not a JSON object.
func (v *Vault) API(t testing.TB, method, path, token string, body any) (int, map[string]any) {
	t.Helper()
	var r io.Reader
	if body != nil {
		raw, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(raw)
	}
	req, err := http.NewRequest(method, v.Addr+"/v1/"+path, r)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Vault-Token", token)
	if method == http.MethodPatch {
		req.Header.Set("Content-Type", "application/merge-patch+json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if json.NewDecoder(resp.Body).Decode(&m) != nil {
		m = nil
	}
	return resp.StatusCode, m
}
