package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/phantomvault/phantom/e2e/harness"
	"github.com/phantomvault/phantom/internal/testutil"
	"github.com/phantomvault/phantom/proxy"
)

// unitFile is a systemd unit's settings: each key's values, in order, from
// every section.
type unitFile map[string][]string

func readUnit(t *testing.T, text string) unitFile {
	t.Helper()
	u := unitFile{}
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("unit line %q is not KEY=VALUE", line)
		}
		u[k] = append(u[k], v)
	}
	return u
}

// last is a setting's effective value (the last one given).
func (u unitFile) last(k string) string {
	if vs := u[k]; len(vs) > 0 {
		return vs[len(vs)-1]
	}
	return ""
}

// readEnvFile reads an EnvironmentFile's KEY=VALUE lines.
func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	for _, line := range strings.Split(string(raw), "\n") {
		if line = strings.TrimSpace(line); line == "" || line[0] == '#' {
			continue
		}
		k, v, _ := strings.Cut(line, "=")
		env[k] = v
	}
	return env
}

// TestSystemdUnit checks deploy/systemd/phantom-proxy.service: systemd
// itself finds nothing wrong in it (`systemd-analyze verify`) and rates its
// sandbox well (`systemd-analyze security`); the hardening it promises is
// there; and its ExecStart, with the example environment file and the
// credentials as LoadCredential= hands them over, runs the real proxy
// against a real Vault, which then drains on SIGTERM within TimeoutStopSec.
func TestSystemdUnit(t *testing.T) {
	tools := harness.Require(t)
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		needTool(t, fmt.Errorf("systemd-analyze is not installed (apt-get install systemd): %v", err))
	}
	unitPath := filepath.Join(tools.Root, "deploy", "systemd", "phantom-proxy.service")
	raw, err := os.ReadFile(unitPath)
	if err != nil {
		t.Fatal(err)
	}
	const installedBin = "/usr/local/bin/phantom-proxy"
	unit := readUnit(t, string(raw))
	execStart := strings.Fields(unit.last("ExecStart"))
	if len(execStart) == 0 || execStart[0] != installedBin {
		t.Fatalf("ExecStart=%s does not run %s", unit.last("ExecStart"), installedBin)
	}

	// systemd-analyze verify wants the binary to exist: the same unit,
	// running the binary under test.
	dir := t.TempDir()
	testUnit := filepath.Join(dir, "phantom-proxy.service")
	if err := os.WriteFile(testUnit, []byte(strings.ReplaceAll(string(raw), "ExecStart="+installedBin, "ExecStart="+tools.Proxy)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(analyze, "verify", testUnit).CombinedOutput(); err != nil || len(out) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, err := exec.Command(analyze, "security", "--offline=true", testUnit).CombinedOutput()
	m := regexp.MustCompile(`Overall exposure level for phantom-proxy\.service: ([0-9.]+)`).FindSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	// 0 is a perfect sandbox, 10 none; Vault's own unit rates about 6.
	if exposure, _ := strconv.ParseFloat(string(m[1]), 64); exposure > 2.0 {
		t.Errorf("systemd-analyze security rates the unit's exposure %.1f, want 2.0 or less:\n%s", exposure, out)
	}

	for key, want := range map[string]string{
		"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
		"CapabilityBoundingSet": "", "AmbientCapabilities": "", "Restart": "on-failure", "LimitCORE": "0",
	} {
		if got, ok := unit[key]; !ok || unit.last(key) != want {
			t.Errorf("%s=%q, want %q", key, got, want)
		}
	}
	if user := unit.last("User"); user == "" || user == "root" {
		t.Errorf("User=%q: the service needs a dedicated user", user)
	}
	creds := strings.Join(unit["LoadCredential"], " ")
	if !strings.Contains(creds, "role_id:") || !strings.Contains(creds, "secret_id:") ||
		!strings.Contains(unit.last("ExecStart"), "-role-id-file=%d/role_id") || !strings.Contains(unit.last("ExecStart"), "-secret-id-file=%d/secret_id") {
		t.Errorf("the AppRole credentials are not passed with LoadCredential= (%s) to -role-id-file and -secret-id-file (%s)", creds, unit.last("ExecStart"))
	}
	envFile := readEnvFile(t, filepath.Join(tools.Root, "deploy", "systemd", "phantom-proxy.env.example"))
	stopTimeout, err := time.ParseDuration(unit.last("TimeoutStopSec"))
	if err != nil {
		t.Fatalf("TimeoutStopSec=%s: %v", unit.last("TimeoutStopSec"), err)
	}
	drain, err := time.ParseDuration(envFile["PHANTOM_SHUTDOWN_TIMEOUT"])
	if err != nil || drain != proxy.DefaultShutdownTimeout {
		t.Errorf("the example's PHANTOM_SHUTDOWN_TIMEOUT=%q, want the default %v", envFile["PHANTOM_SHUTDOWN_TIMEOUT"], proxy.DefaultShutdownTimeout)
	}
	if stopTimeout <= drain || stopTimeout > drain+15*time.Second {
		t.Errorf("TimeoutStopSec=%v: want a little more than the drain (%v), so systemd kills only a proxy that failed to stop", stopTimeout, drain)
	}

	// Start the unit's command line as systemd would: the environment file,
	// %d the credentials directory holding copies readable by the service
	// alone, local addresses for this test.
	v := harness.StartDevVault(t)
	upstreamRoute(t, v, "demo")
	credDir := filepath.Join(dir, "credentials")
	if err := os.Mkdir(credDir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, src := range map[string]string{"role_id": v.RoleIDFile, "secret_id": v.SecretIDFile} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(credDir, name), b, 0o400); err != nil {
			t.Fatal(err)
		}
	}
	listen, admin := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t)), fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	envFile["VAULT_ADDR"], envFile["PHANTOM_LISTEN"], envFile["PHANTOM_ADMIN_LISTEN"] = v.Addr, listen, admin
	envFile["PHANTOM_AUDIT_FILE"] = filepath.Join(dir, "audit.log")
	env := []string{"PATH=/usr/bin:/bin", "CREDENTIALS_DIRECTORY=" + credDir}
	for k, val := range envFile {
		env = append(env, k+"="+val)
	}
	args := strings.Fields(strings.ReplaceAll(unit.last("ExecStart"), "%d", credDir))[1:]
	cmd := exec.Command(tools.Proxy, args...)
	cmd.Env = env
	output := new(testutil.LockedBuffer)
	cmd.Stdout, cmd.Stderr = output, output
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
	testutil.Eventually(t, 20*time.Second, func() bool { return harness.Status("http://"+admin+"/readyz") == 200 },
		"the unit's command line did not start a ready proxy; its output:\n%s", output)
	p := &harness.Proxy{URL: "http://" + listen, Out: output}
	tok, _ := v.Mint(t, "demo", "ttl=1h")
	if code, body := p.Call(t, "GET", "/v1/customers", tok); code != 200 {
		t.Fatalf("a call through the unit's proxy: %d %s", code, body)
	}

	ctx, cancel := context.WithTimeout(context.Background(), stopTimeout)
	defer cancel()
	cmd.Process.Signal(syscall.SIGTERM) // KillSignal=
	select {
	case err := <-done:
		done <- err // for the cleanup
		if err != nil {
			t.Fatalf("the proxy exited with %v on SIGTERM; its output:\n%s", err, output)
		}
	case <-ctx.Done():
		t.Fatalf("the proxy did not stop within TimeoutStopSec=%v; its output:\n%s", stopTimeout, output)
	}
}
