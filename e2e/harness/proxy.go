package harness

import (
	"context"
	"errors"
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

	"github.com/phantomvault/phantom/internal/testutil"
)

// Proxy is the real phantom-proxy binary, logged in to a Vault with the
// bootstrap's AppRole credentials.
type Proxy struct {
	URL       string // agents' base URL
	Admin     string // /metrics, /healthz, /readyz
	AuditFile string
	Out       *testutil.LockedBuffer // stdout and stderr

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
	return StartProxyEnv(t, v, nil, extra...)
}

// StartProxyEnv is StartProxy with more environment variables (KEY=VALUE)
// for the proxy process.
func StartProxyEnv(t testing.TB, v *Vault, env []string, extra ...string) *Proxy {
	t.Helper()
	// A free port can be taken by another process between FreePort and the
	// proxy's bind: start again on new ports when that is why it exited.
	for attempt := 1; ; attempt++ {
		p := LaunchProxy(t, v, env, extra...)
		ready := false
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if Status(p.Admin+"/readyz") == 200 {
				ready = true
				break
			}
			if p.exited() {
				break
			}
		}
		switch {
		case ready:
			return p
		case attempt < 3 && p.exited() && strings.Contains(p.Out.String(), "address already in use"):
			continue
		default:
			t.Fatalf("the proxy did not become ready; its output:\n%s", p.Out)
			return nil
		}
	}
}

// exited reports whether the proxy process has ended.
func (p *Proxy) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// LaunchProxy starts phantom-proxy like StartProxyEnv but does not wait for
// it to become ready: for proxies that should not.
func LaunchProxy(t testing.TB, v *Vault, env []string, extra ...string) *Proxy {
	t.Helper()
	p := &Proxy{
		URL:       "http://127.0.0.1:" + strconv.Itoa(FreePort(t)),
		Admin:     "http://127.0.0.1:" + strconv.Itoa(FreePort(t)),
		AuditFile: filepath.Join(t.TempDir(), "audit.log"),
		Out:       new(testutil.LockedBuffer),
	}
	// The script execs the proxy: cmd's process is the proxy's. Flags in
	// extra come last and win.
	cmd := v.tools.stackCommand(append([]string{"proxy", v.Addr, v.RoleIDFile, v.SecretIDFile,
		strings.TrimPrefix(p.URL, "http://"), strings.TrimPrefix(p.Admin, "http://"), p.AuditFile,
		"-vault-timeout=1s", "-shutdown-timeout=5s", "-log-level=debug"}, extra...)...)
	cmd.Env = append(append(os.Environ(), "VAULT_TOKEN=", "VAULT_ADDR=", "PHANTOM_PROXY_BIN="+v.tools.Proxy), env...)
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
	return p
}

// RunProxy runs phantom-proxy with env and args (nothing else: give it all
// it needs) for a start that should fail, and returns its output and exit
// error. A proxy still running after 10 s is stopped and reported as such.
func RunProxy(t testing.TB, env []string, args ...string) (string, error) {
	t.Helper()
	tl := Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, tl.Proxy, args...)
	cmd.Env = append(append(os.Environ(), "VAULT_TOKEN=", "VAULT_ADDR="), env...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return string(out), errors.New("still running after 10s")
	}
	return string(out), err
}

// Status is the HTTP status of a GET, 0 if there was no answer.
func Status(url string) int {
	resp, err := pollClient.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// Call sends one agent request through the proxy with a Bearer token.
func (p *Proxy) Call(t testing.TB, method, path, token string) (int, string) {
	t.Helper()
	code, body, _ := p.send(t, 15*time.Second, method, path, token, "", nil)
	return code, body
}

// Do sends one request through the proxy (token as Bearer unless "", body
// unless "", then header) and returns the answer's status, body and headers.
func (p *Proxy) Do(t testing.TB, method, path, token, body string, header http.Header) (int, string, http.Header) {
	t.Helper()
	return p.send(t, time.Minute, method, path, token, body, header)
}

// JSONBody is the header of a request with a JSON body, for Do.
var JSONBody = http.Header{"Content-Type": {"application/json"}}

// send is Do within timeout: no answer by then fails the test, with the
// host's pressure and the proxy's output.
func (p *Proxy) send(t testing.TB, timeout time.Duration, method, path, token, body string, header http.Header) (int, string, http.Header) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var reqBody io.Reader
	if body != "" {
		reqBody = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, p.URL+path, reqBody)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v (after %v)\nhost pressure:\n%sthe proxy's output:\n%s",
			method, path, err, time.Since(start).Round(time.Millisecond), HostPressure(), p.Out)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// Metrics is the text of the proxy's /metrics.
func (p *Proxy) Metrics(t testing.TB) string {
	t.Helper()
	resp, err := http.Get(p.Admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// Grep returns the lines of text that contain sub.
func Grep(text, sub string) string {
	var b strings.Builder
	for line := range strings.Lines(text) {
		if strings.Contains(line, sub) {
			b.WriteString(line)
		}
	}
	return b.String()
}

// PID is the proxy process's, for a test that reads its memory.
func (p *Proxy) PID() int { return p.cmd.Process.Pid }
