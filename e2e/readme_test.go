package e2e

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
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
	"github.com/phantomvault/phantom/internal/sigv4"
	"github.com/phantomvault/phantom/internal/sigv4/sigv4test"
)

// Real keys the documentation's commands use, by environment variable.
var readmeKeys = map[string]string{
	"STRIPE_SECRET_KEY":          "sk_live_README0stripe0key0never0shown01",
	"STRIPE_ROTATED_KEY":         "sk_live_README0stripe0rotated0key0never0",
	"OPENAI_SECRET_KEY":          "sk-proj-README0openai0key0never0shown0001",
	"ANTHROPIC_SECRET_KEY":       "sk-ant-api03-README0anthropic0key0never00",
	"GEMINI_SECRET_KEY":          "AIzaREADME0gemini0key0never0shown00001",
	"MCP_SERVER_KEY":             "mcp0README0server0key0never0shown000001",
	"AWS_REAL_ACCESS_KEY_ID":     "AKIAREADME0EXAMPLE01",
	"AWS_REAL_SECRET_ACCESS_KEY": "README0aws0secret0access0key0never0shown",
	// Signed APIs (auth_type=hmac): the routes are written, not called.
	"BINANCE_SECRET_KEY": "README0binance0secret0never0shown0000001",
	"BINANCE_API_KEY":    "README0binance0api0key0never0shown00001",
	"CB_SECRET":          "UkVBRE1FIGNvaW5iYXNlIHNlY3JldCwgbmV2ZXIgc2hvd24=",
	"CB_KEY":             "README0coinbase0key0never0shown00001",
	"CB_PASSPHRASE":      "README0coinbase0passphrase",
	// An OAuth2 client (docs/oauth2.md): the engine trades it for access
	// tokens at the stand-in's /oauth/token.
	"PARTNER_CLIENT_SECRET": "README0oauth2client0secret0never0shown1",
}

// readmeDocs are the Markdown files whose sh blocks TestReadmeCommands
// runs, in this order, as one session: later blocks rely on earlier ones
// (the quickstart's install and proxy, the routes written in
// routes-and-tokens.md). Every Markdown file with an sh block must be here
// (blocks of make commands aside: CI runs those itself).
var readmeDocs = []string{
	"README.md",
	"docs/install.md",
	"docs/routes-and-tokens.md",
	"docs/limits.md",
	"docs/agents.md",
	"docs/aws.md",
	"docs/oauth2.md",
	"docs/github.md",
	"docs/operations.md",
}

// readmeAccessToken is what the stand-in's token endpoint issues.
const readmeAccessToken = "README0oauth2access0token0issued0000001"

// standInAPI answers for Stripe, OpenAI, Anthropic, Gemini, S3 (a SigV4
// signature verified with the real secret) and a remote MCP server, each
// only with its real key in its own place (Stripe's route
// injects a Bearer key, whatever form the agent used), naming the API it
// played. The MCP server answers an initialize request as Streamable HTTP
// does: a session id and an event stream.
func standInAPI(w http.ResponseWriter, r *http.Request) {
	bearer := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	api := ""
	switch {
	case r.URL.Path == "/oauth/token": // docs/oauth2.md's token endpoint
		id, secret, _ := r.BasicAuth()
		if r.Method != http.MethodPost || id != "phantom-reports" || secret != readmeKeys["PARTNER_CLIENT_SECRET"] ||
			r.PostFormValue("grant_type") != "client_credentials" || r.PostFormValue("scope") != "reports.read" {
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error":"invalid_client"}`)
			return
		}
		io.WriteString(w, `{"access_token":"`+readmeAccessToken+`","token_type":"Bearer","expires_in":3600}`)
		return
	case bearer == readmeAccessToken:
		api = "oauth2"
	case strings.HasPrefix(r.Header.Get("Authorization"), sigv4.Algorithm):
		body, _ := io.ReadAll(r.Body)
		if err := sigv4test.Verify(r, body, readmeKeys["AWS_REAL_ACCESS_KEY_ID"], readmeKeys["AWS_REAL_SECRET_ACCESS_KEY"], "s3"); err != nil {
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprintf(w, "<Error><Code>SignatureDoesNotMatch</Code><Message>%s</Message></Error>", err)
			return
		}
		api = "s3"
	case bearer == readmeKeys["MCP_SERVER_KEY"]:
		body, _ := io.ReadAll(r.Body)
		if r.Method != http.MethodPost || !strings.Contains(r.Header.Get("Accept"), "text/event-stream") ||
			!strings.Contains(string(body), `"method":"initialize"`) {
			w.WriteHeader(http.StatusBadRequest)
			io.WriteString(w, `{"error":"not an MCP initialize request"}`)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Mcp-Session-Id", "stand-in-session")
		w.(http.Flusher).Flush() // a stream: headers first, then the event
		fmt.Fprintf(w, "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"api\":\"mcp\",\"path\":%q}}\n\n", r.URL.Path)
		return
	case bearer == readmeKeys["STRIPE_SECRET_KEY"] || bearer == readmeKeys["STRIPE_ROTATED_KEY"]:
		api = "stripe"
	case r.Header.Get("Authorization") == "Bearer "+readmeKeys["OPENAI_SECRET_KEY"]:
		api = "openai"
	case r.Header.Get("X-Api-Key") == readmeKeys["ANTHROPIC_SECRET_KEY"] && r.Header.Get("Anthropic-Version") != "":
		api = "anthropic"
	case r.URL.Query().Get("key") == readmeKeys["GEMINI_SECRET_KEY"]:
		api = "gemini"
	default:
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"error":"invalid key"}`)
		return
	}
	fmt.Fprintf(w, `{"api":%q,"path":%q}`+"\n", api, r.URL.Path)
}

// TestReadmeCommands runs every sh block of README.md and then of the docs
// that carry commands (readmeDocs), in order, as one shell session,
// swapping only hosts and ports for loopback ones.
func TestReadmeCommands(t *testing.T) {
	tools := harness.Require(t)
	shBlock := regexp.MustCompile("(?s)```sh\n(.*?)```")
	listed := map[string]bool{}
	for _, doc := range readmeDocs {
		listed[doc] = true
	}
	for _, pattern := range []string{"*.md", "docs/*.md"} {
		files, _ := filepath.Glob(filepath.Join(tools.Root, pattern))
		for _, f := range files {
			rel, _ := filepath.Rel(tools.Root, f)
			body, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, b := range shBlock.FindAllStringSubmatch(string(body), -1) {
				if !strings.Contains(b[1], "make ") && !listed[filepath.ToSlash(rel)] {
					t.Fatalf("%s has sh blocks but is not in readmeDocs: its commands would go untested", rel)
				}
			}
		}
	}
	v := harness.StartDevVault(t)
	// docs/github.md's App, repository and git (github_git_test.go).
	gitBin := requireGit(t)
	gh := newGitHubStandIn(t, gitBin, "123456", "7890123", "my-org/agent-repo")
	api := harness.Listen(t)
	apiSrv := &http.Server{Handler: gh.before(http.HandlerFunc(standInAPI))}
	go apiSrv.Serve(api)
	t.Cleanup(func() { apiSrv.Close() })
	apiURL := "http://" + api.Addr().String()
	proxyPort, adminPort := harness.FreePort(t), harness.FreePort(t)

	hosts := strings.NewReplacer(
		"https://api.stripe.com", apiURL,
		"https://api.openai.com", apiURL,
		"https://api.anthropic.com", apiURL,
		"https://generativelanguage.googleapis.com", apiURL,
		"https://mcp.example.com", apiURL,
		"https://s3.us-east-1.amazonaws.com", apiURL,
		"https://api.partner.example", apiURL,
		"https://api.github.com", apiURL,
		"https://github.com", apiURL,
		"@phantom.internal:8080", "@127.0.0.1:"+strconv.Itoa(proxyPort),
		"https://login.partner.example", apiURL,
		"https://vault.internal:8200", v.Addr,
		"http://phantom.internal:8080", "http://127.0.0.1:"+strconv.Itoa(proxyPort),
		"0.0.0.0:8080", "127.0.0.1:"+strconv.Itoa(proxyPort),
		"127.0.0.1:9090", "127.0.0.1:"+strconv.Itoa(adminPort),
		"/etc/vault/plugins", v.PluginDir(),
	)
	var script strings.Builder
	script.WriteString("set -euo pipefail\n")
	ran := 0
	for _, doc := range readmeDocs {
		text, err := os.ReadFile(filepath.Join(tools.Root, doc))
		if err != nil {
			t.Fatal(err)
		}
		ranHere := 0
		for i, b := range shBlock.FindAllStringSubmatch(string(text), -1) {
			if strings.Contains(b[1], "make ") {
				continue // make demo and make test: CI runs those itself
			}
			startsProxy := strings.Contains(b[1], "phantom-proxy -vault-addr")
			if startsProxy {
				// Glue, not docs: a later block that starts the proxy
				// replaces the one an earlier block left running.
				script.WriteString(`if [ -n "${glue_proxy_pid:-}" ]; then kill "$glue_proxy_pid"; wait "$glue_proxy_pid" || true; fi` + "\n")
			}
			fmt.Fprintf(&script, "echo '--- %s block %d'\n%s\n", doc, i, hosts.Replace(b[1]))
			if startsProxy {
				// Glue: wait until the proxy started above is ready.
				fmt.Fprintf(&script, "glue_proxy_pid=$!\nfor _ in $(seq 100); do curl -fs http://127.0.0.1:%d/readyz >/dev/null && break; sleep 0.1; done\n", adminPort)
			}
			ran++
			ranHere++
		}
		if ranHere == 0 {
			t.Fatalf("%s has no runnable sh block: drop it from readmeDocs", doc)
		}
	}
	if ran < 15 {
		t.Fatalf("found only %d runnable blocks in %s", ran, strings.Join(readmeDocs, ", "))
	}

	// The session's directory: bootstrap/ as in a checkout, vault and
	// phantom-proxy on PATH.
	dir := t.TempDir()
	binDir := filepath.Join(dir, ".bin")
	os.Mkdir(binDir, 0o755)
	for name, target := range map[string]string{"vault": tools.Vault, "phantom-proxy": tools.Proxy} {
		if err := os.Symlink(target, filepath.Join(binDir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(filepath.Join(tools.Root, "bootstrap"), filepath.Join(dir, "bootstrap")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "github-app.private-key.pem"), []byte(gh.keyPEM), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("bash", "-c", script.String())
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PATH="+binDir+":"+os.Getenv("PATH"), "HOME="+v.Home,
		"VAULT_ADDR="+v.Addr, "VAULT_TOKEN="+v.Token, "VAULT_FORMAT=", "PHANTOM_PLUGIN_BIN="+tools.Plugin,
		// The agent's git: who commits, no system configuration, no prompt.
		"GIT_AUTHOR_NAME=agent", "GIT_AUTHOR_EMAIL=agent@example.com", "GIT_COMMITTER_NAME=agent",
		"GIT_COMMITTER_EMAIL=agent@example.com", "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0")
	for k, val := range readmeKeys {
		cmd.Env = append(cmd.Env, k+"="+val)
	}
	// A file, not a pipe: the proxy the session leaves running holds it open.
	out, err := os.Create(filepath.Join(dir, "session.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // the proxy it starts joins this group
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		time.Sleep(200 * time.Millisecond)
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	})
	err = cmd.Wait()
	session, _ := os.ReadFile(out.Name())
	got := string(session)
	if err != nil {
		t.Fatalf("the documentation's commands failed: %v\n%s", err, got)
	}
	for _, want := range []string{`"api":"stripe","path":"/v1/customers"`, `"api":"openai","path":"/v1/models"`,
		`"api":"anthropic","path":"/v1/messages"`, `"api":"gemini","path":"/v1beta/models/gemini-2.5-flash"`,
		"ready", `phantom_proxy_requests_total{decision="allowed"`, "credential_fingerprint",
		`"reason":"revoked"`, `"api":"mcp","path":"/mcp"`, `"api":"oauth2","path":"/v1/reports/q3"`, "Mcp-Session-Id: stand-in-session",
		"Cloning into 'agent-repo'", `"full_name":"my-org/agent-repo"`} {
		if !strings.Contains(got, want) {
			t.Errorf("the documentation session's output lacks %q:\n%s", want, got)
		}
	}
	g := &gitRunner{t: t, bin: gitBin, home: t.TempDir()}
	if pushed := g.ok(gh.bare, "log", "-1", "--format=%s", "main"); pushed != "agent: notes" {
		t.Errorf("github.com's main after docs/github.md's push: %q", pushed)
	}
	for _, s := range gh.secrets() {
		if strings.Contains(got, s) {
			t.Errorf("the documentation session printed the GitHub App's key or an installation token (%.12s...)", s)
		}
	}
	for name, key := range readmeKeys {
		for _, form := range []string{key, base64.StdEncoding.EncodeToString([]byte(key + ":"))} {
			if strings.Contains(got, form) {
				t.Errorf("the documentation session printed %s", name)
			}
		}
	}
}
