// Package harness runs Phantom's real parts for end-to-end tests: a real
// Vault (from scripts/vault.sh), the plugin and proxy binaries built from this
// checkout, Phantom installed through bootstrap/bootstrap.sh, and loopback
// upstreams. Everything it starts is stopped in t.Cleanup.
package harness

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// PluginName is the plugin's catalog name.
const PluginName = "vault-plugin-secrets-phantom"

// Tools are the binaries every test runs.
type Tools struct {
	Root   string // the repository
	Vault  string
	Plugin string // built with the default version
	Proxy  string
	dir    string
	err    error // why a binary is missing
}

var tools *Tools

// Main builds the binaries, runs the tests and cleans up: call it from
// TestMain.
func Main(m *testing.M) {
	dir, err := os.MkdirTemp("", "phantom-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tools = build(dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Require returns the tools, failing the test in CI and skipping it
// elsewhere when one is missing: CI must never pass by skipping.
func Require(t testing.TB) *Tools {
	t.Helper()
	if tools == nil {
		t.Fatal("harness.Main was not called from TestMain")
	}
	if tools.err == nil {
		return tools
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("end-to-end test cannot run: %v", tools.err)
	}
	t.Skipf("end-to-end test skipped: %v", tools.err)
	return nil
}

func build(dir string) *Tools {
	_, file, _, _ := runtime.Caller(0)
	tl := &Tools{Root: filepath.Dir(filepath.Dir(filepath.Dir(file))), dir: dir}
	tl.Plugin = filepath.Join(dir, PluginName)
	tl.Proxy = filepath.Join(dir, "phantom-proxy")
	if tl.err = tl.goBuild(tl.Plugin, "./cmd/"+PluginName); tl.err != nil {
		return tl
	}
	if tl.err = tl.goBuild(tl.Proxy, "./cmd/phantom-proxy"); tl.err != nil {
		return tl
	}
	// scripts/vault.sh is the one place that knows where Vault is.
	cmd := exec.Command("bash", filepath.Join(tl.Root, "scripts", "vault.sh"), "--find")
	var errOut bytes.Buffer
	cmd.Stderr = &errOut
	out, err := cmd.Output()
	if err != nil {
		tl.err = fmt.Errorf("scripts/vault.sh --find: %v: %s", err, bytes.TrimSpace(errOut.Bytes()))
		return tl
	}
	tl.Vault = string(bytes.TrimSpace(out))
	return tl
}

// stackCommand runs a command of scripts/stack.sh, the one way a local
// stack starts: the proxy's command line and Vault's configuration are
// written there, for the scripts and these tests alike.
func (tl *Tools) stackCommand(args ...string) *exec.Cmd {
	return exec.Command("bash", append([]string{filepath.Join(tl.Root, "scripts", "stack.sh")}, args...)...)
}

func (tl *Tools) goBuild(out, pkg string, flags ...string) error {
	cmd := exec.Command("go", append(append([]string{"build"}, flags...), "-o", out, pkg)...)
	cmd.Dir = tl.Root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building %s: %v\n%s", pkg, err, b)
	}
	return nil
}

// PluginVersion builds the plugin reporting version, for upgrade tests.
func (tl *Tools) PluginVersion(t testing.TB, version string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), PluginName)
	if err := tl.goBuild(out, "./cmd/"+PluginName, "-ldflags", "-X github.com/phantomvault/phantom/internal/version.Version="+version); err != nil {
		t.Fatal(err)
	}
	return out
}

// FreePort returns a free loopback port.
func FreePort(t testing.TB) int {
	t.Helper()
	ln := Listen(t)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Listen listens on a free loopback port.
func Listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// freePortPair returns a loopback port p such that p and p+1 are free,
// below the kernel's ephemeral range (32768 and up on Linux): Vault binds
// p+1 for its cluster only once it is unsealed, and a port from that range
// may meanwhile be handed to any outgoing connection as its local port.
func freePortPair(t testing.TB) int {
	t.Helper()
	for range 200 {
		p := 20000 + rand.IntN(12000)
		l1, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
		if err != nil {
			continue
		}
		l2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+1))
		l1.Close()
		if err == nil {
			l2.Close()
			return p
		}
	}
	t.Fatal("no free pair of loopback ports")
	return 0
}

// pollClient is for status probes inside a polling loop: a server that
// takes the connection but never answers must not outlast the loop's
// deadline, as http.DefaultClient (no timeout) would let it.
var pollClient = &http.Client{Timeout: 5 * time.Second}

// HostPressure is the kernel's CPU, memory and I/O stall figures (Linux
// PSI), for failure messages: a test that timed out while the machine was
// thrashing says so, instead of sending someone to look for a hang.
func HostPressure() string {
	var b strings.Builder
	for _, r := range []string{"cpu", "memory", "io"} {
		raw, err := os.ReadFile("/proc/pressure/" + r)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
			b.WriteString(r + " " + line + "\n")
		}
	}
	return b.String()
}
