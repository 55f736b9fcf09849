package e2e

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/phantomvault/phantom/e2e/harness"
	"github.com/phantomvault/phantom/internal/testutil"
)

// readSecretID returns the secret_id a bootstrap wrote to dir.
func readSecretID(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "secret_id"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// canLogIn reports whether Vault accepts the role_id in dir with secretID.
func canLogIn(t *testing.T, v *harness.Vault, dir, secretID string) bool {
	t.Helper()
	probe := filepath.Join(t.TempDir(), "secret_id")
	if err := os.WriteFile(probe, []byte(secretID), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := v.TryAppRoleLogin(t, filepath.Join(dir, "role_id"), probe)
	return err == nil
}

// TestSecretIDRotation: a bootstrap run leaves earlier secret_ids valid and
// says so; with PHANTOM_ROTATE_SECRET_ID=true it destroys them once the new
// one is written.
func TestSecretIDRotation(t *testing.T) {
	v := harness.StartDevVault(t)
	dir := filepath.Dir(v.SecretIDFile)
	first := readSecretID(t, dir)
	out, err := v.RunBootstrap(t, []string{"secret-id"})
	if err != nil || !strings.Contains(out, "phantom-proxy has 1 earlier secret_id(s), still valid") {
		t.Fatalf("a second secret_id: %v\n%s", err, out)
	}
	second := readSecretID(t, dir)
	if !canLogIn(t, v, dir, first) || !canLogIn(t, v, dir, second) {
		t.Fatal("without rotation, both secret_ids should log in")
	}
	out, err = v.RunBootstrap(t, []string{"secret-id"}, "PHANTOM_ROTATE_SECRET_ID=true")
	if err != nil || !strings.Contains(out, "destroyed 2 earlier secret_id(s) of phantom-proxy") {
		t.Fatalf("rotation: %v\n%s", err, out)
	}
	third := readSecretID(t, dir)
	for name, s := range map[string]string{"first": first, "second": second} {
		if canLogIn(t, v, dir, s) {
			t.Errorf("the %s secret_id still logs in after rotation", name)
		}
	}
	if !canLogIn(t, v, dir, third) {
		t.Fatal("the rotated-in secret_id does not log in")
	}
	// A full install run rotates the same way.
	out = v.Bootstrap(t, "PHANTOM_ROTATE_SECRET_ID=true")
	if !strings.Contains(out, "destroyed 1 earlier secret_id(s)") || canLogIn(t, v, dir, third) || !canLogIn(t, v, dir, readSecretID(t, dir)) {
		t.Fatalf("rotation by an install run:\n%s", out)
	}
}

// TestSecretIDFleetRotation: two proxy replicas, each with its own
// secret_id (PHANTOM_REPLICA). Rotating one replica's secret_id (new file in
// place first, then its old secret_id destroyed) cuts off neither: both
// keep serving through several re-logins, the rotated one with its new
// secret_id; the other replica's secret_id is untouched. A rotation that
// names no replica is refused while named replicas hold secret_ids.
func TestSecretIDFleetRotation(t *testing.T) {
	v := harness.StartDevVault(t)
	upstreamRoute(t, v, "demo")
	v.Bootstrap(t, "PHANTOM_PROXY_TOKEN_TTL=2s", "PHANTOM_PROXY_TOKEN_MAX_TTL=3s")
	dirs := map[string]string{"proxy-1": filepath.Join(t.TempDir(), "proxy-1"), "proxy-2": filepath.Join(t.TempDir(), "proxy-2")}
	proxies := map[string]*harness.Proxy{}
	for _, replica := range []string{"proxy-1", "proxy-2"} {
		out, err := v.RunBootstrap(t, []string{"secret-id"}, "PHANTOM_REPLICA="+replica, "PHANTOM_OUT_DIR="+dirs[replica])
		if err != nil || !strings.Contains(out, "for replica "+replica) {
			t.Fatalf("secret_id for %s: %v\n%s", replica, err, out)
		}
		proxies[replica] = harness.StartProxy(t, v, "-role-id-file="+filepath.Join(dirs[replica], "role_id"),
			"-secret-id-file="+filepath.Join(dirs[replica], "secret_id"))
	}
	tok, _ := v.Mint(t, "demo")
	old1, old2 := readSecretID(t, dirs["proxy-1"]), readSecretID(t, dirs["proxy-2"])

	out, err := v.RunBootstrap(t, []string{"secret-id"}, "PHANTOM_REPLICA=proxy-1", "PHANTOM_ROTATE_SECRET_ID=true", "PHANTOM_OUT_DIR="+dirs["proxy-1"])
	if err != nil || !strings.Contains(out, "destroyed 1 earlier secret_id(s) of phantom-proxy for replica proxy-1") {
		t.Fatalf("rotating proxy-1: %v\n%s", err, out)
	}
	loginsBefore := strings.Count(proxies["proxy-1"].Out.String(), "logged in to Vault")
	deadline := time.Now().Add(8 * time.Second) // tokens live 3s at most: several re-logins
	for time.Now().Before(deadline) {
		for name, p := range proxies {
			if code, body := p.Call(t, "GET", "/v1/customers", tok); code != 200 {
				t.Fatalf("%s cut off by the rotation: %d %s\n%s", name, code, body, p.Out)
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	if n := strings.Count(proxies["proxy-1"].Out.String(), "logged in to Vault"); n <= loginsBefore {
		t.Fatalf("proxy-1 did not log in again after the rotation:\n%s", proxies["proxy-1"].Out)
	}
	if canLogIn(t, v, dirs["proxy-1"], old1) {
		t.Error("proxy-1's old secret_id still logs in")
	}
	if !canLogIn(t, v, dirs["proxy-2"], old2) {
		t.Error("rotating proxy-1 destroyed proxy-2's secret_id")
	}
	out, err = v.RunBootstrap(t, []string{"secret-id"}, "PHANTOM_ROTATE_SECRET_ID=true", "PHANTOM_OUT_DIR="+t.TempDir())
	if err == nil || !strings.Contains(out, "rotate each with PHANTOM_REPLICA") {
		t.Fatalf("an unnamed rotation in a fleet: %v\n%s", err, out)
	}
	if !canLogIn(t, v, dirs["proxy-2"], old2) {
		t.Error("the refused rotation destroyed proxy-2's secret_id")
	}
}

// TestSecretIDTTL: PHANTOM_SECRET_ID_TTL gives the secret_id a finite life;
// once Vault's tidy has run past it, it no longer logs in.
func TestSecretIDTTL(t *testing.T) {
	v := harness.StartDevVault(t)
	dir := filepath.Join(t.TempDir(), "creds")
	if out, err := v.RunBootstrap(t, []string{"secret-id"}, "PHANTOM_SECRET_ID_TTL=3s", "PHANTOM_OUT_DIR="+dir); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	secretID := readSecretID(t, dir)
	lookup := v.JSON(t, "write", "auth/approle/role/phantom-proxy/secret-id/lookup", "secret_id="+secretID)
	data := lookup["data"].(map[string]any)
	if data["secret_id_ttl"] != float64(3) || data["expiration_time"] == "0001-01-01T00:00:00Z" {
		t.Fatalf("secret_id_ttl %v, want 3", data["secret_id_ttl"])
	}
	if !canLogIn(t, v, dir, secretID) {
		t.Fatal("a fresh secret_id with a TTL does not log in")
	}
	time.Sleep(3500 * time.Millisecond)
	// Vault deletes expired secret_ids in its periodic tidy (once a minute);
	// the tidy endpoint runs it now.
	v.MustCLI(t, "write", "-f", "auth/approle/tidy/secret-id")
	testutil.Eventually(t, 30*time.Second, func() bool { return !canLogIn(t, v, dir, secretID) }, "an expired secret_id still logs in after tidy")
}

// TestCredentialFilesPrivate: the bootstrap refuses an output directory
// that others can write to (or that is not yours), never writes a secret
// through a file someone created beforehand, and the checkout's git ignores
// the files it writes.
func TestCredentialFilesPrivate(t *testing.T) {
	v := harness.StartDevVault(t)
	for _, mode := range []os.FileMode{0o777, 0o770, 0o722, os.ModeSticky | 0o777} {
		shared := filepath.Join(t.TempDir(), "shared")
		if err := os.Mkdir(shared, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(shared, mode); err != nil {
			t.Fatal(err)
		}
		out, err := v.RunBootstrap(t, []string{"secret-id"}, "PHANTOM_OUT_DIR="+shared)
		if err == nil || !strings.Contains(out, "writable by group or others") {
			t.Errorf("mode %v: %v\n%s", mode, err, out)
		}
		if entries, _ := os.ReadDir(shared); len(entries) != 0 {
			t.Errorf("mode %v: the bootstrap wrote %v into a shared directory", mode, entries)
		}
	}
	if os.Getuid() == 0 {
		theirs := filepath.Join(t.TempDir(), "theirs")
		os.Mkdir(theirs, 0o700)
		os.Chown(theirs, 4242, 4242)
		if out, err := v.RunBootstrap(t, []string{"secret-id"}, "PHANTOM_OUT_DIR="+theirs); err == nil || !strings.Contains(out, "belongs to uid 4242") {
			t.Errorf("a directory of another user: %v\n%s", err, out)
		}
		above := filepath.Join(t.TempDir(), "above")
		os.Mkdir(above, 0o777)
		os.Chmod(above, 0o777)
		if out, err := v.RunBootstrap(t, []string{"secret-id"}, "PHANTOM_OUT_DIR="+filepath.Join(above, "mine")); err == nil || !strings.Contains(out, "above PHANTOM_OUT_DIR") {
			t.Errorf("under a directory others can write to: %v\n%s", err, out)
		}
	}

	// Someone pre-created the names an older bootstrap used for its
	// temporary files, and holds them open: they never receive a secret.
	dir := filepath.Join(t.TempDir(), "creds")
	os.Mkdir(dir, 0o700)
	var held []*os.File
	for _, name := range []string{"secret_id.tmp", "role_id.tmp"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		held = append(held, f)
	}
	if out, err := v.RunBootstrap(t, []string{"secret-id"}, "PHANTOM_OUT_DIR="+dir); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, f := range held {
		if b, _ := io.ReadAll(f); len(b) != 0 {
			t.Errorf("%s, opened before the bootstrap, holds %d bytes of credentials", f.Name(), len(b))
		}
	}
	for _, name := range []string{"secret_id", "role_id"} {
		info, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm() != 0o600 || info.Sys().(*syscall.Stat_t).Uid != uint32(os.Getuid()) {
			t.Errorf("%s: mode %v, owner %d", name, info.Mode(), info.Sys().(*syscall.Stat_t).Uid)
		}
	}
	if entries, _ := filepath.Glob(filepath.Join(dir, ".*")); len(entries) != 0 {
		t.Errorf("temporary files left behind: %v", entries)
	}

	// PHANTOM_OUT_DIR defaults to the current directory: in a checkout, git
	// must not pick the credentials up. The checkout's .gitignore is checked
	// in a scratch repository, so this runs from a source tarball too.
	scratch := t.TempDir()
	ignore, err := os.ReadFile(filepath.Join(harness.Require(t).Root, ".gitignore"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(scratch, ".gitignore"), ignore, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("git", "init", "-q", scratch).CombinedOutput(); err != nil {
		t.Fatalf("git init: %v %s", err, out)
	}
	for _, name := range []string{"role_id", "secret_id", "bootstrap/role_id", "phantom-proxy-credentials/secret_id", ".secret_id.Ab12Cd34"} {
		cmd := exec.Command("git", "-C", scratch, "check-ignore", "-q", "--no-index", name)
		if err := cmd.Run(); err != nil {
			t.Errorf("git does not ignore %s: %v", name, err)
		}
	}
}
