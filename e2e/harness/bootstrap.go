package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/phantomvault/phantom/internal/testutil"
)

// Bootstrap runs bootstrap/bootstrap.sh against this Vault with the given
// extra environment (for example PHANTOM_PLUGIN_BIN=...), and records the
// proxy's credential files.
func (v *Vault) Bootstrap(t testing.TB, env ...string) string {
	t.Helper()
	out := filepath.Join(v.Home, "bootstrap")
	b, err := v.RunBootstrap(t, nil, append([]string{"PHANTOM_OUT_DIR=" + out}, env...)...)
	if err != nil {
		t.Fatalf("bootstrap: %v\n%s", err, b)
	}
	v.RoleIDFile, v.SecretIDFile = filepath.Join(out, "role_id"), filepath.Join(out, "secret_id")
	return b
}

// RunBootstrap runs bootstrap/bootstrap.sh with args (e.g. "secret-id") and
// extra environment, as an operator would, and returns its output, failing
// or not. Its credential files go to HOME/bootstrap unless env sets
// PHANTOM_OUT_DIR; nothing is recorded.
func (v *Vault) RunBootstrap(t testing.TB, args []string, env ...string) (string, error) {
	t.Helper()
	// Bounded like every other CLI run here: bootstrap.sh makes a score of
	// them, each allowed a minute and retries by the vault CLI itself.
	ctx, cancel := context.WithTimeout(context.Background(), bootstrapTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(v.tools.Root, "bootstrap", "bootstrap.sh"), args...)
	cmd.WaitDelay = 10 * time.Second // a vault CLI child may still hold the output pipe
	cmd.Env = append(os.Environ(), append([]string{
		"VAULT=" + v.tools.Vault, "VAULT_ADDR=" + v.Addr, "VAULT_TOKEN=" + v.Token, "HOME=" + v.Home,
		"PHANTOM_PLUGIN_BIN=" + v.tools.Plugin, "PHANTOM_PLUGIN_DIR=" + v.PluginDir(),
		"PHANTOM_OUT_DIR=" + filepath.Join(v.Home, "bootstrap"),
	}, env...)...)
	b, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("still running after %v (%v); host pressure:\n%s", bootstrapTimeout, err, HostPressure())
	}
	return string(b), err
}

// bootstrapTimeout bounds one bootstrap.sh run, which takes seconds on an
// idle machine.
const bootstrapTimeout = 3 * time.Minute

// Install is Phantom installed at one mount by the bootstrap: the names it
// derived and the credential files of that mount's proxy.
type Install struct {
	Mount                    string // e.g. phx
	Name                     string // policies <Name>-admin, -issuer, -proxy; AppRole role <Name>-proxy
	RoleIDFile, SecretIDFile string
	Output                   string // what the bootstrap printed
}

// Role is the install's AppRole role.
func (in *Install) Role() string { return in.Name + "-proxy" }

// ProxyArgs are the phantom-proxy flags that point it at this install.
func (in *Install) ProxyArgs() []string {
	return []string{"-mount=" + in.Mount, "-role-id-file=" + in.RoleIDFile, "-secret-id-file=" + in.SecretIDFile}
}

// BootstrapMount installs Phantom at another mount, side by side with
// phantom/, its credential files in a directory of their own; the Vault's
// RoleIDFile and SecretIDFile stay those of phantom/.
func (v *Vault) BootstrapMount(t testing.TB, mount string, env ...string) *Install {
	t.Helper()
	out := filepath.Join(v.Home, "bootstrap-"+strings.ReplaceAll(mount, "/", "-"))
	b, err := v.RunBootstrap(t, nil, append([]string{"PHANTOM_MOUNT=" + mount, "PHANTOM_OUT_DIR=" + out}, env...)...)
	if err != nil {
		t.Fatalf("bootstrap of %s/: %v\n%s", mount, err, b)
	}
	return &Install{
		Mount: mount, Name: strings.ToLower(strings.ReplaceAll(mount, "/", "-")),
		RoleIDFile: filepath.Join(out, "role_id"), SecretIDFile: filepath.Join(out, "secret_id"), Output: b,
	}
}

// AppRoleLogin logs in with the credential files a bootstrap wrote, as the
// proxy would, and returns the Vault token.
func (v *Vault) AppRoleLogin(t testing.TB, roleIDFile, secretIDFile string) string {
	t.Helper()
	token, err := v.TryAppRoleLogin(t, roleIDFile, secretIDFile)
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// TryAppRoleLogin is AppRoleLogin that reports a refused login.
func (v *Vault) TryAppRoleLogin(t testing.TB, roleIDFile, secretIDFile string) (string, error) {
	t.Helper()
	roleID, err := os.ReadFile(roleIDFile)
	if err != nil {
		return "", err
	}
	secretID, err := os.ReadFile(secretIDFile)
	if err != nil {
		return "", err
	}
	out, errOut, err := v.Run(t, "write", "-field=token", "auth/approle/login",
		"role_id="+strings.TrimSpace(string(roleID)), "secret_id="+strings.TrimSpace(string(secretID)))
	if err != nil {
		return "", fmt.Errorf("AppRole login: %v: %s", err, errOut)
	}
	return strings.TrimSpace(out), nil
}

// start runs the server in its own process group, so stopping it also
// reaches the plugin processes Vault starts.
func (v *Vault) start(t testing.TB) {
	t.Helper()
	cmd := exec.Command(v.args[0], v.args[1:]...)
	cmd.Env = append(os.Environ(), "HOME="+v.Home, "VAULT_ADDR=", "VAULT_TOKEN=", "VAULT_BIN="+v.tools.Vault)
	cmd.Stdout, cmd.Stderr = v.Log, v.Log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting vault: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	v.pid = cmd.Process.Pid
	var once sync.Once
	v.stop = func() { once.Do(func() { stopGroup(cmd.Process.Pid, done) }) }
	t.Cleanup(v.stop)
}

// PluginPIDs returns the processes of the Phantom plugin that this server
// started (children of the server running the plugin binary).
func (v *Vault) PluginPIDs(t testing.TB) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces, so split after ')'.
		s := string(stat)
		comm := s[strings.IndexByte(s, '(')+1 : strings.LastIndexByte(s, ')')]
		fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(fields) > 1 && fields[1] == strconv.Itoa(v.pid) && strings.HasPrefix(PluginName, comm) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Crash kills the server and its plugins at once, with no graceful step-down.
func (v *Vault) Crash() { syscall.Kill(-v.pid, syscall.SIGKILL) }

// Stop stops the server (and its plugins).
func (v *Vault) Stop() { v.stop() }

// Restart stops a persistent server and starts it again, unsealed.
func (v *Vault) Restart(t testing.TB) {
	t.Helper()
	v.stop()
	v.start(t)
	testutil.Eventually(t, 15*time.Second, v.listening, "vault did not restart; its log:\n%s", v.Log)
	v.unseal(t)
}

// Unseal unseals a persistent server sealed with `vault operator seal`.
func (v *Vault) Unseal(t testing.TB) { v.unseal(t) }

func (v *Vault) unseal(t testing.TB) {
	t.Helper()
	v.MustCLI(t, "operator", "unseal", v.unsealKey)
	v.waitActive(t)
}

func (v *Vault) waitActive(t testing.TB) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, v.healthy, "vault did not become active; its log:\n%s", v.Log)
}

func (v *Vault) healthy() bool {
	resp, err := pollClient.Get(v.Addr + "/v1/sys/health")
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func (v *Vault) listening() bool {
	c, err := net.DialTimeout("tcp", v.hostPort(), time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// stopGroup ends a process group we started: politely, then firmly.
func stopGroup(pid int, done <-chan struct{}) {
	syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
	}
	syscall.Kill(-pid, syscall.SIGKILL)
}

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
