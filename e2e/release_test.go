package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/phantomvault/phantom/e2e/harness"
	"github.com/phantomvault/phantom/internal/version"
)

// runIn runs name with args in dir and returns its output, failing the test
// if it fails.
func runIn(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestRelease builds a release for this host with `make release`, as a
// maintainer would, twice: the archives are byte for byte the same, their
// SHA256SUMS verify, the binaries inside report the release's version and
// commit, and the printed `vault plugin register -sha256=` is the plugin
// binary's own hash.
func TestRelease(t *testing.T) {
	tools := harness.Require(t)
	goEnv := strings.Fields(runIn(t, tools.Root, nil, "go", "env", "GOOS", "GOARCH", "GOVERSION"))
	platform, goVersion := goEnv[0]+"/"+goEnv[1], goEnv[2]
	commit := "unknown"
	if out, err := exec.Command("git", "-C", tools.Root, "rev-parse", "--short", "HEAD").Output(); err == nil {
		commit = strings.TrimSpace(string(out))
	}

	var sums [2][]byte
	var output string
	var dist string
	for i := range sums {
		dist = filepath.Join(t.TempDir(), "dist")
		// The Makefile's default VERSION is internal/version's: one place.
		output = runIn(t, tools.Root, nil, "make", "--no-print-directory", "release", "PLATFORMS="+platform, "DIST="+dist)
		var err error
		if sums[i], err = os.ReadFile(filepath.Join(dist, version.Version, "SHA256SUMS")); err != nil {
			t.Fatalf("no SHA256SUMS: %v\n%s", err, output)
		}
	}
	if !bytes.Equal(sums[0], sums[1]) {
		t.Fatalf("two release builds of one tree differ:\n%s\n%s", sums[0], sums[1])
	}

	out := filepath.Join(dist, version.Version)
	name := "phantom_" + version.Version + "_" + strings.ReplaceAll(platform, "/", "_")
	if want := name + ".tar.gz\n"; !strings.HasSuffix(string(sums[0]), "  "+want) {
		t.Fatalf("SHA256SUMS does not name %s:\n%s", want, sums[0])
	}
	t.Logf("sha256sum -c: %s", runIn(t, out, nil, "sha256sum", "-c", "SHA256SUMS"))
	runIn(t, out, nil, "tar", "-xzf", name+".tar.gz")

	for _, bin := range []string{"phantom-proxy", harness.PluginName} {
		got := binaryVersion(t, filepath.Join(out, name, "bin", bin))
		want := bin + " " + version.Version + " (commit " + commit
		if !strings.HasPrefix(got, want) || !strings.HasSuffix(got, ", "+goVersion+")") {
			t.Errorf("%s -version = %q, want %q... built with %s", bin, got, want, goVersion)
		}
	}
	for _, f := range []string{"bootstrap/bootstrap.sh", "deploy/systemd/phantom-proxy.service", "deploy/systemd/phantom-proxy.env.example", "README.md", "CHANGELOG.md",
		"SECURITY.md", "BENCHMARKS.md", "docs/README.md", "docs/install.md", "docs/api.md"} {
		if _, err := os.Stat(filepath.Join(out, name, f)); err != nil {
			t.Errorf("the archive lacks %s", f)
		}
	}

	plugin, err := os.ReadFile(filepath.Join(out, name, "bin", harness.PluginName))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(plugin)
	m := regexp.MustCompile(regexp.QuoteMeta(platform) + `: vault plugin register -sha256=([0-9a-f]{64}) -version=` + regexp.QuoteMeta(version.Version) + ` `).FindStringSubmatch(output)
	if m == nil {
		t.Fatalf("make release printed no register command for %s:\n%s", platform, output)
	}
	if m[1] != hex.EncodeToString(sum[:]) {
		t.Fatalf("printed -sha256=%s, the plugin binary's is %x", m[1], sum)
	}

	// The archive installs as it is: its bootstrap, run from it with no
	// PHANTOM_PLUGIN_BIN, registers its own plugin binary and moves the
	// mount to it.
	v := harness.StartDevVault(t)
	cmd := exec.Command(filepath.Join(out, name, "bootstrap", "bootstrap.sh"))
	cmd.Env = append(os.Environ(), "VAULT="+tools.Vault, "VAULT_ADDR="+v.Addr, "VAULT_TOKEN="+v.Token, "HOME="+v.Home,
		"PHANTOM_PLUGIN_BIN=", "PHANTOM_PLUGIN_DIR="+v.PluginDir(), "PHANTOM_OUT_DIR="+filepath.Join(t.TempDir(), "credentials"))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the release's bootstrap: %v\n%s", err, b)
	}
	mountVersions(t, v, version.Version, m[1])
}
