package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/phantomvault/phantom/plugin"
)

const pluginName = "vault-plugin-secrets-phantom"

// Set by TestMain: the real binaries every test runs.
var (
	vaultBin   string
	pluginBin  string
	toolsError error // why the binaries are missing
)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "phantom-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	toolsError = findTools(dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// findTools builds the plugin from this checkout and locates a Vault binary:
// $VAULT_BIN, else vault on PATH, else the one scripts/vault.sh caches.
func findTools(dir string) error {
	root := repoRoot()
	pluginBin = filepath.Join(dir, pluginName)
	build := exec.Command("go", "build", "-o", pluginBin, "./cmd/"+pluginName)
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("building the plugin: %v\n%s", err, out)
	}
	for _, candidate := range []string{os.Getenv("VAULT_BIN"), lookPath("vault"), filepath.Join(root, ".cache/bin/vault")} {
		if candidate == "" {
			continue
		}
		if info, err := os.Stat(candidate); err == nil && !info.IsDir() {
			vaultBin = candidate
			return nil
		}
	}
	return errors.New("no Vault binary: run scripts/vault.sh (make test does) or set VAULT_BIN")
}

func lookPath(name string) string {
	p, _ := exec.LookPath(name)
	return p
}

func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// requireTools fails the test in CI and skips it elsewhere when a binary is
// missing: CI must never pass by skipping.
func requireTools(t *testing.T) {
	t.Helper()
	if toolsError == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("end-to-end test cannot run: %v", toolsError)
	}
	t.Skipf("end-to-end test skipped: %v", toolsError)
}

// vaultServer is a real `vault server -dev` on loopback with the plugin
// registered and mounted at phantom/.
type vaultServer struct {
	addr  string // http://127.0.0.1:port
	token string
	home  string // HOME for the server and CLI: keeps ~/.vault-token untouched
	log   *bytes.Buffer
}

func startVault(t *testing.T) *vaultServer {
	t.Helper()
	requireTools(t)

	dir := t.TempDir()
	pluginDir := filepath.Join(dir, "plugins")
	if err := os.Mkdir(pluginDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := copyFile(pluginBin, filepath.Join(pluginDir, pluginName)); err != nil {
		t.Fatal(err)
	}

	port := freePortPair(t) // Vault also listens on port+1 for cluster traffic
	v := &vaultServer{addr: "http://127.0.0.1:" + strconv.Itoa(port), token: "root", home: dir, log: new(bytes.Buffer)}
	cmd := exec.Command(vaultBin, "server", "-dev",
		"-dev-root-token-id="+v.token,
		"-dev-listen-address=127.0.0.1:"+strconv.Itoa(port),
		"-dev-plugin-dir="+pluginDir,
		"-dev-no-store-token",
	)
	cmd.Env = append(os.Environ(), "HOME="+dir, "VAULT_ADDR=", "VAULT_TOKEN=")
	cmd.Stdout, cmd.Stderr = v.log, v.log
	// Its own process group, so cleanup also reaches the plugin processes
	// Vault starts.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting vault: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { stopGroup(cmd.Process.Pid, done) })

	if !eventually(15*time.Second, func() bool { return v.healthy() }) {
		t.Fatalf("vault did not become ready; its log:\n%s", v.log)
	}
	v.registerPlugin(t)
	return v
}

// stopGroup ends the process group we started: politely, then firmly.
func stopGroup(pid int, done <-chan struct{}) {
	syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
	syscall.Kill(-pid, syscall.SIGKILL)
}

func (v *vaultServer) healthy() bool {
	resp, err := http.Get(v.addr + "/v1/sys/health")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func (v *vaultServer) registerPlugin(t *testing.T) {
	t.Helper()
	sum, err := fileSHA256(pluginBin)
	if err != nil {
		t.Fatal(err)
	}
	v.mustCLI(t, "plugin", "register", "-sha256="+sum, "-version="+plugin.Version, "secret", pluginName)
	v.mustCLI(t, "secrets", "enable", "-path=phantom", "-plugin-version="+plugin.Version, pluginName)
}

// cli runs the vault CLI against this server, as a user would.
func (v *vaultServer) cli(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	return v.cliFormat(t, "table", args...)
}

func (v *vaultServer) cliFormat(t *testing.T, format string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, vaultBin, args...)
	cmd.Env = append(os.Environ(), "VAULT_ADDR="+v.addr, "VAULT_TOKEN="+v.token, "HOME="+v.home, "VAULT_FORMAT="+format)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

func (v *vaultServer) mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	out, errOut, err := v.cli(t, args...)
	if err != nil {
		t.Fatalf("vault %s: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// jsonCLI runs a vault command with -format=json and decodes its answer.
func (v *vaultServer) jsonCLI(t *testing.T, args ...string) map[string]any {
	t.Helper()
	out, errOut, err := v.cliFormat(t, "json", args...)
	if err != nil {
		t.Fatalf("vault %s: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("vault %s: not JSON: %v\n%s", strings.Join(args, " "), err, out)
	}
	return m
}

func eventually(timeout time.Duration, ok func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if ok() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// freePortPair returns a loopback port p such that p and p+1 are free.
func freePortPair(t *testing.T) int {
	t.Helper()
	for range 50 {
		l1, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l1.Addr().(*net.TCPAddr).Port
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

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
