package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
