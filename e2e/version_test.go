package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/phantomvault/phantom/e2e/harness"
	"github.com/phantomvault/phantom/internal/version"
)

// binaryVersion runs bin -version and returns what it printed.
func binaryVersion(t *testing.T, bin string) string {
	t.Helper()
	out, err := exec.Command(bin, "-version").CombinedOutput()
	if err != nil {
		t.Fatalf("%s -version: %v\n%s", bin, err, out)
	}
	return strings.TrimSpace(string(out))
}

// installPluginVersion puts a plugin binary that reports ver into Vault's
// plugin directory and registers it by SHA-256 and version, as an operator
// upgrading by hand would; it returns the binary's SHA-256.
func installPluginVersion(t *testing.T, v *harness.Vault, bin, ver string) string {
	t.Helper()
	raw, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	sha := hex.EncodeToString(sum[:])
	command := harness.PluginName + "-" + ver
	if err := os.WriteFile(filepath.Join(v.PluginDir(), command), raw, 0o755); err != nil {
		t.Fatal(err)
	}
	v.MustCLI(t, "plugin", "register", "-sha256="+sha, "-version="+ver, "-command="+command, "secret", harness.PluginName)
	return sha
}

// TestVersionsAgreeThroughUpgrade checks that the binary's -version, the
// catalog (`vault plugin info`) and the mount (`vault secrets list
// -detailed`) name the same version at every step of an upgrade by version:
// register the new version, move the mount to it, reload. Vault itself
// refuses a registration whose version the binary does not report.
func TestVersionsAgreeThroughUpgrade(t *testing.T) {
	tools := harness.Require(t)
	v := harness.StartDevVault(t)
	upstreamRoute(t, v, "demo")
	p := harness.StartProxy(t, v)
	tok, _ := v.Mint(t, "demo", "ttl=1h")

	// The proxy and the default plugin build report the one version.
	for _, bin := range []string{tools.Proxy, tools.Plugin} {
		got := binaryVersion(t, bin)
		if !strings.Contains(got, " "+version.Version+" ") || !strings.Contains(got, runtime.Version()) {
			t.Errorf("%s -version = %q, want version %s and %s", filepath.Base(bin), got, version.Version, runtime.Version())
		}
	}
	mountVersions(t, v, version.Version, "")

	for _, ver := range []string{"v0.97.0", "v0.98.0"} {
		bin := tools.PluginVersion(t, ver)
		if got := binaryVersion(t, bin); !strings.HasPrefix(got, harness.PluginName+" "+ver+" ") {
			t.Fatalf("the plugin built as %s says %q", ver, got)
		}
		sha := installPluginVersion(t, v, bin, ver)

		// Registering it as another version is refused: the version is the
		// binary's, not the operator's guess.
		if out, errOut, err := v.Run(t, "plugin", "register", "-sha256="+sha, "-version=v0.99.0",
			"-command="+harness.PluginName+"-"+ver, "secret", harness.PluginName); err == nil ||
			!strings.Contains(out+errOut, "did not match") {
			t.Fatalf("registering the %s binary as v0.99.0: err=%v\n%s%s", ver, err, out, errOut)
		}

		info := v.JSON(t, "plugin", "info", "-version="+ver, "secret", harness.PluginName)
		if info["version"] != ver || info["sha256"] != sha {
			t.Fatalf("vault plugin info -version=%s: version %v sha256 %v, want %s %s", ver, info["version"], info["sha256"], ver, sha)
		}

		// The bootstrap's move: tune the mount to the version, reload.
		v.MustCLI(t, "secrets", "tune", "-plugin-version="+ver, "phantom/")
		v.MustCLI(t, "plugin", "reload", "-type=secret", "-plugin="+harness.PluginName)
		mountVersions(t, v, ver, sha)

		if code, body := p.Call(t, "GET", "/v1/customers", tok); code != 200 {
			t.Fatalf("a live token on %s: %d %s", ver, code, body)
		}
	}
}

// mountVersions checks that phantom/ is set to and runs version want (and
// the binary with SHA-256 sha, unless empty).
func mountVersions(t *testing.T, v *harness.Vault, want, sha string) {
	t.Helper()
	var mount map[string]any
	ok := false
	// A reload restarts the plugin: the running version appears once it is up.
	for range 100 {
		mount = v.JSON(t, "secrets", "list", "-detailed")["phantom/"].(map[string]any)
		if ok = mount["running_plugin_version"] == want; ok {
			break
		}
		v.MustCLI(t, "read", "phantom/config") // starts the plugin if it is not running
	}
	if !ok || mount["plugin_version"] != want {
		t.Fatalf("vault secrets list -detailed: plugin_version %v, running_plugin_version %v; want %s",
			mount["plugin_version"], mount["running_plugin_version"], want)
	}
	if sha != "" && mount["running_sha256"] != sha {
		t.Fatalf("vault secrets list -detailed: running_sha256 %v, want %s", mount["running_sha256"], sha)
	}
}
