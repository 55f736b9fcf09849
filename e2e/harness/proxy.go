package harness

import (
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Proxy is the real phantom-proxy binary, logged in to a Vault with the
// bootstrap's AppRole credentials.
type Proxy struct {
	URL       string // agents' base URL
	Admin     string // /metrics, /healthz, /readyz
	AuditFile string
	Out       *SyncBuffer // stdout and stderr

	cmd  *exec.Cmd
	done chan struct{} // closed when the process has exited
}

// Terminate sends SIGTERM, as an orchestrator does, and returns a channel
// closed once the process has exited.
func (p *Proxy) Terminate() <-chan struct{} {
	p.cmd.Process.Signal(syscall.SIGTERM)
	return p.done
}

// StartProxy starts phantom-proxy against v and waits until it is ready.
func StartProxy(t testing.TB, v *Vault, extra ...string) *Proxy {
	t.Helper()
	p := &Proxy{
		URL:       "http://127.0.0.1:" + strconv.Itoa(FreePort(t)),
		Admin:     "http://127.0.0.1:" + strconv.Itoa(FreePort(t)),
		AuditFile: filepath.Join(t.TempDir(), "audit.log"),
		Out:       new(SyncBuffer),
	}
	args := append([]string{
		"-listen=" + strings.TrimPrefix(p.URL, "http://"),
		"-admin-listen=" + strings.TrimPrefix(p.Admin, "http://"),
		"-vault-addr=" + v.Addr,
		"-role-id-file=" + v.RoleIDFile,
		"-secret-id-file=" + v.SecretIDFile,
		"-audit-file=" + p.AuditFile,
		"-vault-timeout=1s",
		"-shutdown-timeout=5s",
		"-log-level=debug",
	}, extra...)
	cmd := exec.Command(v.tools.Proxy, args...)
	cmd.Env = append(os.Environ(), "VAULT_TOKEN=", "VAULT_ADDR=")
	cmd.Stdout, cmd.Stderr = p.Out, p.Out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	p.cmd, p.done = cmd, done
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	if !Eventually(20*time.Second, func() bool { return Status(p.Admin+"/readyz") == 200 }) {
		t.Fatalf("the proxy did not become ready; its output:\n%s", p.Out)
	}
	return p
}

// Status is the HTTP status of a GET, 0 if there was no answer.
func Status(url string) int {
	resp, err := http.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// Call sends one agent request through the proxy with a Bearer token.
func (p *Proxy) Call(t testing.TB, method, path, token string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, p.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}
