package e2e

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/cgi"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phantomvault/phantom/e2e/harness"
	"github.com/phantomvault/phantom/internal/token"
)

// TestGitHubAppGitThroughTheProxy: a coding agent behind a GitHub App, as
// docs/github.md sets it up. The real git clones and pushes through the
// proxy with only a phantom token in its remote URL; a stand-in github.com
// (the real git http-backend) takes nothing but Basic x-access-token:<an
// installation token>; a read-only mint cannot push; the REST API takes the
// same App's tokens as Bearer. Neither the private key nor an installation
// token, bare or in its Basic form, is in anything git prints or keeps,
// nor in what a hostile upstream echoes, the proxy's log or its audit.
func TestGitHubAppGitThroughTheProxy(t *testing.T) {
	harness.Require(t)
	gitBin := requireGit(t)
	v := harness.StartDevVault(t)
	gh := newGitHubStandIn(t, gitBin, "1001", "7", "owner/repo")
	apiUp := harness.StartUpstream(t, http.HandlerFunc(gh.serveAPI))
	gitUp := harness.StartUpstream(t, http.HandlerFunc(gh.serveGit))
	common := []string{"auth_type=github_app", "app_id=1001", "installation_id=7", "github_api_url=" + apiUp.URL,
		"private_key=" + gh.keyPEM, "repositories=repo"}
	v.MustCLI(t, append([]string{"write", "phantom/routes/github-git", "upstream=" + gitUp.URL, "send_as=basic",
		"permissions=contents=write", "allowed_paths=/owner/repo.git/**", "allowed_methods=GET,POST"}, common...)...)
	v.MustCLI(t, append([]string{"write", "phantom/routes/github-api", "upstream=" + apiUp.URL,
		"permissions=contents=read,metadata=read", "allowed_paths=/repos/owner/repo/**", "allowed_methods=GET"}, common...)...)
	p := harness.StartProxy(t, v)
	rw, _ := v.Mint(t, "github-git", "ttl=1h")
	ro, _ := v.Mint(t, "github-git", "ttl=1h", "allowed_paths=/owner/repo.git/info/refs,/owner/repo.git/git-upload-pack")
	api, _ := v.Mint(t, "github-api", "ttl=1h")

	// git asks without credentials first and sends its URL's once
	// challenged.
	code, _, h := p.Do(t, "GET", "/owner/repo.git/info/refs?service=git-upload-pack", "", "", nil)
	if code != 401 || !strings.HasPrefix(h.Get("WWW-Authenticate"), "Basic ") {
		t.Fatalf("a request without a token: %d, WWW-Authenticate %q", code, h.Get("WWW-Authenticate"))
	}

	g := &gitRunner{t: t, bin: gitBin, home: t.TempDir()}
	remote := func(tok string) string {
		return strings.Replace(p.URL, "http://", "http://x-access-token:"+tok+"@", 1) + "/owner/repo.git"
	}
	work := t.TempDir()
	g.ok(work, "clone", remote(rw), "rw")
	if b, err := os.ReadFile(filepath.Join(work, "rw", "README.md")); err != nil || string(b) != "seeded\n" {
		t.Fatalf("the clone's README.md: %q %v", b, err)
	}
	os.WriteFile(filepath.Join(work, "rw", "agent.txt"), []byte("from the agent\n"), 0o644)
	g.ok(filepath.Join(work, "rw"), "add", "agent.txt")
	g.ok(filepath.Join(work, "rw"), "commit", "-qm", "agent change")
	g.ok(filepath.Join(work, "rw"), "push", "origin", "HEAD:main")
	pushed := g.ok(filepath.Join(work, "rw"), "rev-parse", "HEAD")
	if head := g.ok(gh.bare, "rev-parse", "main"); head != pushed {
		t.Fatalf("after the push github.com's main is %s, want %s", head, pushed)
	}

	// A read-only mint clones and fetches; its push is refused by the
	// proxy (403), and github.com's main stays.
	g.ok(work, "clone", remote(ro), "ro")
	os.WriteFile(filepath.Join(work, "ro", "ro.txt"), []byte("must not land\n"), 0o644)
	g.ok(filepath.Join(work, "ro"), "add", "ro.txt")
	g.ok(filepath.Join(work, "ro"), "commit", "-qm", "read-only change")
	if out, err := g.run(filepath.Join(work, "ro"), "push", "origin", "HEAD:main"); err == nil || !strings.Contains(out, "403") {
		t.Fatalf("a read-only token's push: %v\n%s", err, out)
	}
	if head := g.ok(gh.bare, "rev-parse", "main"); head != pushed {
		t.Fatal("a read-only token's push landed")
	}

	// The token as a header instead keeps it out of the clone's config.
	g.ok(work, "-c", "http.extraHeader=Authorization: Bearer "+ro, "clone", p.URL+"/owner/repo.git", "hdr")
	if config, _ := os.ReadFile(filepath.Join(work, "hdr", ".git", "config")); strings.Contains(string(config), ro) {
		t.Error("a clone with http.extraHeader keeps the phantom token in .git/config")
	}

	// The REST API, Bearer, on its own route.
	code, body, _ := p.Do(t, "GET", "/repos/owner/repo", api, "", nil)
	if code != 200 || !strings.Contains(body, `"full_name":"owner/repo"`) {
		t.Fatalf("GET /repos/owner/repo: %d %s", code, body)
	}
	// A hostile github.com echoes the Authorization it got, as git sends
	// it: the agent gets it masked.
	basic := http.Header{"Authorization": {"Basic " + base64.StdEncoding.EncodeToString([]byte("x-access-token:"+rw))}}
	code, echoed, _ := p.Do(t, "GET", "/owner/repo.git/echo", "", "", basic)
	if code != 200 || !strings.Contains(echoed, "Basic ") {
		t.Fatalf("the echo: %d %s", code, echoed)
	}

	secrets := gh.secrets()
	gh.mu.Lock()
	defer gh.mu.Unlock()
	if len(gh.refused) > 0 {
		t.Errorf("github.com refused requests: %v", gh.refused)
	}
	for _, auth := range gh.gitAuth {
		if _, _, ok := token.Find(auth); ok || strings.Contains(auth, rw) {
			t.Error("github.com got a phantom token")
		}
	}
	if len(gh.issued) < 2 {
		t.Fatalf("%d installation tokens issued, want one for each route", len(gh.issued))
	}
	audit, _ := os.ReadFile(p.AuditFile)
	texts := map[string]string{"git's output": g.out.String(), "what the echo gave the agent": echoed,
		"the proxy's log": p.Out.String(), "the proxy's audit": string(audit), "the REST answer": body}
	for _, clone := range []string{"rw", "ro", "hdr"} {
		config, _ := os.ReadFile(filepath.Join(work, clone, ".git", "config"))
		texts[clone+"/.git/config"] = string(config)
	}
	for name, text := range texts {
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("%s holds the private key or an installation token (%.12s...)", name, s)
			}
		}
	}
}

// requireGit is the path of git, which the test needs with its
// http-backend: missing, it fails under CI and skips elsewhere.
func requireGit(t *testing.T) string {
	bin, err := exec.LookPath("git")
	if err == nil {
		var out []byte
		if out, err = exec.Command(bin, "--exec-path").Output(); err == nil {
			_, err = os.Stat(filepath.Join(strings.TrimSpace(string(out)), "git-http-backend"))
		}
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("git with its http-backend is needed: %v", err)
		}
		t.Skipf("git with its http-backend is needed: %v", err)
	}
	return bin
}

// gitRunner runs git as an agent would, with nothing of the host's git
// configuration, no prompt and no credential helper; out collects all it
// prints.
type gitRunner struct {
	t    *testing.T
	bin  string
	home string
	out  strings.Builder
}

func (g *gitRunner) run(dir string, args ...string) (string, error) {
	cmd := exec.Command(g.bin, append([]string{"-c", "user.name=agent", "-c", "user.email=agent@example.com",
		"-c", "init.defaultBranch=main"}, args...)...)
	cmd.Dir = dir
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "GIT_") && !strings.HasPrefix(kv, "HOME=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "HOME="+g.home, "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0")
	out, err := cmd.CombinedOutput()
	g.out.Write(out)
	return strings.TrimSpace(string(out)), err
}

func (g *gitRunner) ok(dir string, args ...string) string {
	g.t.Helper()
	out, err := g.run(dir, args...)
	if err != nil {
		g.t.Fatalf("git %s: %v\n%s", args[0], err, out)
	}
	return out
}

// gitHubStandIn plays GitHub for one App and one repository: api.github.com
// (serveAPI: the token endpoint, which checks the App's JWT, and the REST
// API, which takes an installation token as Bearer) and github.com
// (serveGit: the real git http-backend over a bare repository, behind Basic
// x-access-token:<an installation token>).
type gitHubStandIn struct {
	appID, installation string
	repo                string // owner/name
	keyPEM, keyB64      string
	key                 *rsa.PrivateKey
	bare                string // the repository, seeded with README.md
	backend             http.Handler

	mu      sync.Mutex
	issued  []string
	refused []string
	gitAuth []string // the Authorization of each git request
}

func newGitHubStandIn(t *testing.T, gitBin, appID, installation, repo string) *gitHubStandIn {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der := x509.MarshalPKCS1PrivateKey(key)
	gh := &gitHubStandIn{appID: appID, installation: installation, repo: repo, key: key,
		keyPEM: string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: der})),
		keyB64: base64.StdEncoding.EncodeToString(der)}

	root := t.TempDir()
	gh.bare = filepath.Join(root, filepath.FromSlash(repo)+".git")
	seed := &gitRunner{t: t, bin: gitBin, home: t.TempDir()}
	seed.ok(root, "init", "-q", "--bare", gh.bare)
	seed.ok(gh.bare, "config", "http.receivepack", "true")
	work := t.TempDir()
	seed.ok(work, "init", "-q")
	os.WriteFile(filepath.Join(work, "README.md"), []byte("seeded\n"), 0o644)
	seed.ok(work, "add", "README.md")
	seed.ok(work, "commit", "-qm", "seed")
	seed.ok(work, "push", "-q", gh.bare, "HEAD:main")
	seed.ok(gh.bare, "symbolic-ref", "HEAD", "refs/heads/main")
	execPath := seed.ok(root, "--exec-path")
	gh.backend = &cgi.Handler{Path: filepath.Join(execPath, "git-http-backend"),
		Env: []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1", "GIT_CONFIG_NOSYSTEM=1", "HOME=" + seed.home}}
	return gh
}

// before answers for both of GitHub's hosts on one server, and passes what
// is not GitHub's on to next.
func (gh *gitHubStandIn) before(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/"+gh.repo+".git/"):
			gh.serveGit(w, r)
		case strings.HasPrefix(r.URL.Path, "/app/installations/"), strings.HasPrefix(r.URL.Path, "/repos/"+gh.repo):
			gh.serveAPI(w, r)
		default:
			next.ServeHTTP(w, r)
		}
	})
}

func (gh *gitHubStandIn) serveAPI(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/app/installations/"+gh.installation+"/access_tokens" {
		gh.issue(w, r)
		return
	}
	bearer, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !gh.valid(bearer) || r.URL.Path != "/repos/"+gh.repo {
		gh.refuse(w, "REST "+r.URL.Path)
		return
	}
	fmt.Fprintf(w, `{"full_name":%q,"private":true}`+"\n", gh.repo)
}

func (gh *gitHubStandIn) serveGit(w http.ResponseWriter, r *http.Request) {
	gh.mu.Lock()
	gh.gitAuth = append(gh.gitAuth, r.Header.Get("Authorization"))
	gh.mu.Unlock()
	user, pass, _ := r.BasicAuth()
	if user != "x-access-token" || !gh.valid(pass) {
		gh.refuse(w, "git "+r.URL.Path)
		return
	}
	if r.URL.Path == "/"+gh.repo+".git/echo" { // hostile: every form of what it got
		fmt.Fprintf(w, "%s\n%s:%s\n", r.Header.Get("Authorization"), user, pass)
		return
	}
	gh.backend.ServeHTTP(w, r)
}

// issue answers the token endpoint: an installation token for a JWT the
// App signed, narrowed to the repository.
func (gh *gitHubStandIn) issue(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Repositories []string `json:"repositories"`
	}
	json.NewDecoder(r.Body).Decode(&body)
	jwt, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	_, name, _ := strings.Cut(gh.repo, "/")
	if why := checkE2EAppJWT(&gh.key.PublicKey, gh.appID, jwt); why != "" || !slices.Equal(body.Repositories, []string{name}) {
		gh.refuse(w, fmt.Sprintf("token endpoint: %s %v", why, body.Repositories))
		return
	}
	gh.mu.Lock()
	tok := fmt.Sprintf("ghs_e2eGIT%02d%s", len(gh.issued)+1, strings.Repeat("q", 30))
	gh.issued = append(gh.issued, tok)
	gh.mu.Unlock()
	w.WriteHeader(http.StatusCreated)
	fmt.Fprintf(w, `{"token":%q,"expires_at":%q}`, tok, time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
}

func (gh *gitHubStandIn) valid(tok string) bool {
	gh.mu.Lock()
	defer gh.mu.Unlock()
	return tok != "" && slices.Contains(gh.issued, tok)
}

// refuse answers as GitHub does a request without usable credentials.
func (gh *gitHubStandIn) refuse(w http.ResponseWriter, what string) {
	gh.mu.Lock()
	gh.refused = append(gh.refused, what)
	gh.mu.Unlock()
	w.Header().Set("WWW-Authenticate", `Basic realm="GitHub"`)
	http.Error(w, "Invalid username or token.", http.StatusUnauthorized)
}

// secrets are the key (as PEM and pieces of its bytes' base64) and every
// installation token issued, bare and in its Basic form.
func (gh *gitHubStandIn) secrets() []string {
	gh.mu.Lock()
	defer gh.mu.Unlock()
	out := []string{gh.keyPEM, gh.keyB64[:64], gh.keyB64[len(gh.keyB64)/2 : len(gh.keyB64)/2+64]}
	for _, tok := range gh.issued {
		out = append(out, tok, base64.StdEncoding.EncodeToString([]byte("x-access-token:"+tok)))
	}
	return out
}
