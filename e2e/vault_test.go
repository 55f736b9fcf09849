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
	"sync"
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
	proxyBin   string
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

// findTools builds the plugin and the proxy from this checkout and locates a
// Vault binary: $VAULT_BIN, else vault on PATH, else the one scripts/vault.sh
// caches.
func findTools(dir string) error {
	root := repoRoot()
	pluginBin = filepath.Join(dir, pluginName)
	proxyBin = filepath.Join(dir, "phantom-proxy")
	for bin, pkg := range map[string]string{pluginBin: "./cmd/" + pluginName, proxyBin: "./cmd/phantom-proxy"} {
		build := exec.Command("go", "build", "-o", bin, pkg)
		build.Dir = root
		if out, err := build.CombinedOutput(); err != nil {
			return fmt.Errorf("building %s: %v\n%s", pkg, err, out)
		}
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

// vaultServer is a real Vault on loopback with the plugin registered and
// mounted at phantom/: a dev server, or a persistent one (Raft storage on
// disk, unsealed with its key) that survives restart.
type vaultServer struct {
	addr      string // http://127.0.0.1:port
	token     string
	home      string // HOME for the server and CLI: keeps ~/.vault-token untouched
	log       *syncBuffer
	args      []string
	unsealKey string // persistent mode only
	stop      func()
}

// startVault starts a dev server: in-memory, unsealed, root token "root".
func startVault(t *testing.T) *vaultServer {
	t.Helper()
	v := newVaultServer(t)
	v.token = "root"
	v.args = []string{"server", "-dev", "-dev-root-token-id=root", "-dev-no-store-token",
		"-dev-listen-address=" + strings.TrimPrefix(v.addr, "http://"),
		"-dev-plugin-dir=" + filepath.Join(v.home, "plugins")}
	v.start(t)
	v.waitHealthy(t)
	v.registerPlugin(t)
	return v
}

// startPersistentVault starts a single-node Raft server, initialises and
// unseals it.
func startPersistentVault(t *testing.T) *vaultServer {
	t.Helper()
	v := newVaultServer(t)
	hostPort := strings.TrimPrefix(v.addr, "http://")
	host, port, _ := net.SplitHostPort(hostPort)
	p, _ := strconv.Atoi(port)
	cluster := net.JoinHostPort(host, strconv.Itoa(p+1))
	config := fmt.Sprintf(`
storage "raft" {
  path    = %q
  node_id = "node1"
}
listener "tcp" {
  address         = %q
  cluster_address = %q
  tls_disable     = true
}
api_addr         = %q
cluster_addr     = "http://%s"
plugin_directory = %q
disable_mlock    = true
`, filepath.Join(v.home, "raft"), hostPort, cluster, v.addr, cluster, filepath.Join(v.home, "plugins"))
	if err := os.MkdirAll(filepath.Join(v.home, "raft"), 0o700); err != nil {
		t.Fatal(err)
	}
	cfgFile := filepath.Join(v.home, "vault.hcl")
	if err := os.WriteFile(cfgFile, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	v.args = []string{"server", "-config=" + cfgFile}
	v.start(t)
	if !eventually(15*time.Second, func() bool { _, _, err := v.cli(t, "status"); return err != nil && v.listening() }) {
		t.Fatalf("vault did not start; its log:\n%s", v.log)
	}
	init := v.jsonCLI(t, "operator", "init", "-key-shares=1", "-key-threshold=1")
	v.unsealKey = init["unseal_keys_b64"].([]any)[0].(string)
	v.token = init["root_token"].(string)
	v.unseal(t)
	v.registerPlugin(t)
	return v
}

func newVaultServer(t *testing.T) *vaultServer {
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
	return &vaultServer{addr: "http://127.0.0.1:" + strconv.Itoa(port), home: dir, log: new(syncBuffer)}
}

// start runs the server in its own process group, so stopping it also
// reaches the plugin processes Vault starts.
func (v *vaultServer) start(t *testing.T) {
	t.Helper()
	cmd := exec.Command(vaultBin, v.args...)
	cmd.Env = append(os.Environ(), "HOME="+v.home, "VAULT_ADDR=", "VAULT_TOKEN=")
	cmd.Stdout, cmd.Stderr = v.log, v.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting vault: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	var once sync.Once
	v.stop = func() { once.Do(func() { stopGroup(cmd.Process.Pid, done) }) }
	t.Cleanup(v.stop)
}

// restart stops a persistent server and starts it again, unsealed.
func (v *vaultServer) restart(t *testing.T) {
	t.Helper()
	v.stop()
	v.start(t)
	if !eventually(15*time.Second, v.listening) {
		t.Fatalf("vault did not restart; its log:\n%s", v.log)
	}
	v.unseal(t)
}

func (v *vaultServer) unseal(t *testing.T) {
	t.Helper()
	v.mustCLI(t, "operator", "unseal", v.unsealKey)
	v.waitHealthy(t)
}

func (v *vaultServer) waitHealthy(t *testing.T) {
	t.Helper()
	if !eventually(30*time.Second, v.healthy) {
		t.Fatalf("vault did not become active; its log:\n%s", v.log)
	}
}

func (v *vaultServer) listening() bool {
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(v.addr, "http://"), time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
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

// syncBuffer collects a child's output; the test reads it while it runs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
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

// freePort returns a free loopback port.
func freePort(t *testing.T) int {
	t.Helper()
	ln := listenLoopback(t)
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func listenLoopback(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
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
