package e2e

import (
	"bufio"
	"context"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phantomvault/phantom/e2e/harness"
)

// forwardAPI is a stand-in API behind TLS for the forward-proxy tests: it
// accepts only the real key, echoes it on /v1/echo-key (Phantom must mask
// it), streams on /v1/stream (its second event waits for release), and
// records what it received.
type forwardAPI struct {
	*harness.TLSUpstream
	mu       sync.Mutex
	received []string
	release  chan struct{}
}

func startForwardAPI(t *testing.T, ca *harness.UpstreamCA, name string) *forwardAPI {
	t.Helper()
	a := &forwardAPI{release: make(chan struct{}, 8)}
	a.TLSUpstream = harness.StartTLSUpstream(t, ca, name, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		io.Copy(io.Discard, r.Body) // as an API reads a request body before answering
		a.mu.Lock()
		a.received = append(a.received, auth+" "+r.Host+" "+r.RequestURI+" "+r.Header.Get("Proxy-Authorization"))
		a.mu.Unlock()
		if auth != "Bearer "+realKey {
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error":"Incorrect API key provided: `+auth+`"}`)
			return
		}
		switch r.URL.Path {
		case "/v1/echo-key":
			io.WriteString(w, `{"your_key":"`+strings.TrimPrefix(auth, "Bearer ")+`"}`)
		case "/v1/stream":
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: first\n\n")
			w.(http.Flusher).Flush()
			select {
			case <-a.release: // the client has the first event: nothing was buffered
			case <-time.After(10 * time.Second):
				io.WriteString(w, "data: timed-out\n\n")
				return
			}
			io.WriteString(w, "data: second\n\n")
		default:
			io.WriteString(w, `{"object":"list","host":"`+r.Host+`","path":"`+r.URL.Path+`"}`)
		}
	}))
	return a
}

func (a *forwardAPI) log() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return strings.Join(a.received, "\n")
}

// forwardStack is a real Vault with Phantom, TLS stand-ins and phantom-proxy
// with its forward listener.
type forwardStack struct {
	v    *harness.Vault
	fp   *harness.ForwardProxy
	a, b *forwardAPI
	// aOther is api-a's name on another port; evil a host no route names.
	aOther, evil *forwardAPI
	git          *harness.TLSUpstream
	caPool       *x509.CertPool
}

func startForwardStack(t *testing.T, withGit bool, extra ...string) *forwardStack {
	t.Helper()
	st := &forwardStack{v: harness.StartDevVault(t)}
	ca := harness.NewUpstreamCA(t)
	st.a = startForwardAPI(t, ca, "api-a.phantom.test")
	st.b = startForwardAPI(t, ca, "api-b.phantom.test")
	st.aOther = startForwardAPI(t, ca, "api-a.phantom.test")
	st.evil = startForwardAPI(t, ca, "evil.phantom.test")
	ups := []*harness.TLSUpstream{st.a.TLSUpstream, st.b.TLSUpstream, st.aOther.TLSUpstream, st.evil.TLSUpstream}
	for name, api := range map[string]*forwardAPI{"a": st.a, "b": st.b} {
		st.v.MustCLI(t, "write", "phantom/routes/"+name, "upstream="+api.URL,
			"allowed_paths=/v1/**", "allowed_methods=GET,POST", "credential="+realKey)
	}
	if withGit {
		st.git = startGitServer(t, ca)
		ups = append(ups, st.git)
		st.v.MustCLI(t, "write", "phantom/routes/git", "upstream="+st.git.URL,
			"allowed_paths=/repo.git/**", "allowed_methods=GET,POST", "credential="+realKey)
	}
	st.fp = harness.StartForwardProxy(t, st.v, ca, ups, extra...)
	pemBytes, _ := os.ReadFile(st.fp.CAFile)
	st.caPool = x509.NewCertPool()
	st.caPool.AppendCertsFromPEM(pemBytes)
	return st
}

// run runs a client program with env only (as an agent's tool would run)
// and returns its output.
func run(t *testing.T, env []string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestForwardRealClients runs unchanged clients, configured only by their
// environment (HTTPS_PROXY and the CA variables), through the forward
// proxy: curl, Python requests and git clone from a smart-HTTP server.
func TestForwardRealClients(t *testing.T) {
	curl := harness.Client(t, "/usr/bin/curl")
	python := harness.Client(t, "/usr/bin/python3", "-c", "import requests")
	git := harness.Client(t, "/usr/bin/git")
	// The operator's CA, from files, as in production.
	fwdCA := harness.NewUpstreamCA(t)
	fwdKey := fwdCA.KeyFile(t)
	st := startForwardStack(t, true, "-forward-ca-cert="+fwdCA.File, "-forward-ca-key="+fwdKey)
	if served, _ := os.ReadFile(st.fp.CAFile); string(served) != mustRead(t, fwdCA.File) {
		t.Fatal("/ca.pem is not the operator's CA certificate")
	}
	tokA, _ := st.v.Mint(t, "a", "ttl=1h")

	noProxyCreds := st.fp.ClientEnv(t, "")
	withProxyCreds := st.fp.ClientEnv(t, tokA)

	t.Run("curl, token in the request", func(t *testing.T) {
		out, err := run(t, noProxyCreds, curl, "-sS", "--fail-with-body", "-H", "Authorization: Bearer "+tokA, st.a.URL+"/v1/customers")
		if err != nil || !strings.Contains(out, `"host":"api-a.phantom.test:`+st.a.Port+`","path":"/v1/customers"`) {
			t.Fatalf("%v\n%s", err, out)
		}
	})
	t.Run("curl, token in HTTPS_PROXY only", func(t *testing.T) {
		out, err := run(t, withProxyCreds, curl, "-sS", "--fail-with-body", st.a.URL+"/v1/customers")
		if err != nil || !strings.Contains(out, `"path":"/v1/customers"`) {
			t.Fatalf("%v\n%s", err, out)
		}
	})
	t.Run("curl, refused at CONNECT", func(t *testing.T) {
		// A's token to B: curl reports the CONNECT's 403.
		out, err := run(t, withProxyCreds, curl, "-sS", st.b.URL+"/v1/customers")
		if err == nil || !strings.Contains(out, "CONNECT tunnel failed, response 403") {
			t.Fatalf("%v\n%s", err, out)
		}
		// A revoked token as proxy credentials: 407, the credentials' fault.
		tok, lease := st.v.Mint(t, "a", "ttl=1h")
		st.v.MustCLI(t, "lease", "revoke", "-sync", lease)
		out, err = run(t, st.fp.ClientEnv(t, tok), curl, "-sS", st.a.URL+"/v1/customers")
		if err == nil || !strings.Contains(out, "CONNECT tunnel failed, response 407") {
			t.Fatalf("%v\n%s", err, out)
		}
		if n := st.b.Connections(); n != 0 {
			t.Fatalf("B received %d connections", n)
		}
	})
	t.Run("curl, the echoed key is masked", func(t *testing.T) {
		out, err := run(t, withProxyCreds, curl, "-sS", "--fail-with-body", st.a.URL+"/v1/echo-key")
		if err != nil || strings.Contains(out, realKey) || !strings.Contains(out, strings.Repeat("*", len(realKey))) {
			t.Fatalf("%v\n%s", err, out)
		}
	})
	t.Run("curl, streaming", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, curl, "-sS", "-N", "--fail-with-body", st.a.URL+"/v1/stream")
		cmd.Env = withProxyCreds
		stdout, _ := cmd.StdoutPipe()
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(stdout)
		var events []string
		for sc.Scan() {
			if line := sc.Text(); line != "" {
				events = append(events, line)
				if line == "data: first" {
					st.a.release <- struct{}{} // the first event arrived before the second was written
				}
			}
		}
		if err := cmd.Wait(); err != nil || strings.Join(events, ",") != "data: first,data: second" {
			t.Fatalf("%v: %q", err, events)
		}
	})
	t.Run("the exports of phantom-proxy env", func(t *testing.T) {
		// The documented one-liner, then curl with nothing else.
		dir := t.TempDir()
		script := `eval "$("$0" env -forward "$1" -admin "$2" -ca-file "$3")" && curl -sS --fail-with-body "$4"`
		env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "PHANTOM_TOKEN=" + tokA}
		out, err := run(t, env, "/bin/bash", "-c", script, harness.Require(t).Proxy, st.fp.Forward, st.fp.Admin,
			filepath.Join(dir, "ca.pem"), st.a.URL+"/v1/customers")
		if err != nil || !strings.Contains(out, `"path":"/v1/customers"`) {
			t.Fatalf("%v\n%s", err, out)
		}
	})
	t.Run("python requests", func(t *testing.T) {
		script := `
import os, sys, requests
base = sys.argv[1]
r = requests.get(base + "/v1/customers", timeout=20)
print(r.status_code, r.text)
with requests.get(base + "/v1/stream", stream=True, timeout=20) as s:
    for line in s.iter_lines():
        if line:
            print(line.decode())
            sys.stdout.flush()
            if line == b"data: first":
                print("RELEASE")
                sys.stdout.flush()
`
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, python, "-c", script, st.a.URL)
		cmd.Env = withProxyCreds
		stdout, _ := cmd.StdoutPipe()
		var stderr strings.Builder
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		var lines []string
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "RELEASE" {
				st.a.release <- struct{}{}
				continue
			}
			lines = append(lines, sc.Text())
		}
		err := cmd.Wait()
		out := strings.Join(lines, "\n")
		if err != nil || !strings.HasPrefix(out, `200 {"object":"list"`) || !strings.HasSuffix(out, "data: first\ndata: second") {
			t.Fatalf("%v\n%s\n%s", err, out, stderr.String())
		}
	})
	t.Run("git clone", func(t *testing.T) {
		tokG, _ := st.v.Mint(t, "git", "ttl=1h")
		dest := filepath.Join(t.TempDir(), "clone")
		env := append(st.fp.ClientEnv(t, tokG), "GIT_TERMINAL_PROMPT=0", "GIT_CONFIG_NOSYSTEM=1")
		out, err := run(t, env, git, "clone", st.git.URL+"/repo.git", dest)
		if err != nil {
			t.Fatalf("%v\n%s\nproxy output:\n%s", err, out, st.fp.Out)
		}
		readme, err := os.ReadFile(filepath.Join(dest, "README"))
		if err != nil || string(readme) != "cloned through Phantom\n" {
			t.Fatalf("%v %q", err, readme)
		}
	})

	// The CA's key appears nowhere in the proxy's output.
	keyPEM := mustRead(t, fwdKey)
	keyBody := strings.Split(keyPEM, "\n")[1]
	if out := st.fp.Out.String(); strings.Contains(out, keyBody) || strings.Contains(out, "PRIVATE KEY") {
		t.Fatal("the proxy's output holds the CA key")
	}
	// No upstream ever saw a phantom token, in any header.
	if log := st.a.log(); strings.Contains(log, "phm_") {
		t.Fatalf("the upstream received a phantom token:\n%s", log)
	}
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// startGitServer serves a bare repository with one commit through
// `git http-backend` (smart HTTP), over TLS, accepting only the real key.
func startGitServer(t *testing.T, ca *harness.UpstreamCA) *harness.TLSUpstream {
	t.Helper()
	git := harness.Client(t, "/usr/bin/git")
	root := t.TempDir()
	work := filepath.Join(root, "work")
	env := append(os.Environ(), "HOME="+root, "GIT_CONFIG_NOSYSTEM=1", "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.com",
		"GIT_COMMITTER_NAME=t", "GIT_COMMITTER_EMAIL=t@example.com")
	for _, args := range [][]string{
		{"init", "-q", "-b", "main", work},
		{"-C", work, "add", "README"},
		{"-C", work, "commit", "-q", "-m", "first"},
		{"clone", "-q", "--bare", work, filepath.Join(root, "repo.git")},
	} {
		if args[0] == "-C" && args[2] == "add" {
			os.WriteFile(filepath.Join(work, "README"), []byte("cloned through Phantom\n"), 0o644)
		}
		cmd := exec.Command(git, args...)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	execPath, err := exec.Command(git, "--exec-path").Output()
	if err != nil {
		t.Fatal(err)
	}
	backend := &cgi.Handler{
		Path: filepath.Join(strings.TrimSpace(string(execPath)), "git-http-backend"),
		Env:  []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1", "HOME=" + root},
	}
	return harness.StartTLSUpstream(t, ca, "git.phantom.test", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+realKey {
			http.Error(w, "wrong key", http.StatusForbidden)
			return
		}
		backend.ServeHTTP(w, r)
	}))
}
