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
)

// Real keys the README's commands use, by environment variable.
var readmeKeys = map[string]string{
	"STRIPE_SECRET_KEY":    "sk_live_README0stripe0key0never0shown01",
	"STRIPE_ROTATED_KEY":   "sk_live_README0stripe0rotated0key0never0",
	"OPENAI_SECRET_KEY":    "sk-proj-README0openai0key0never0shown0001",
	"ANTHROPIC_SECRET_KEY": "sk-ant-api03-README0anthropic0key0never00",
	"GEMINI_SECRET_KEY":    "AIzaREADME0gemini0key0never0shown00001",
}

// standInAPI answers for Stripe, OpenAI, Anthropic and Gemini, each only
// with its real key in its own place (Stripe's route injects a Bearer key,
// whatever form the agent used), naming the API it played.
func standInAPI(w http.ResponseWriter, r *http.Request) {
	bearer := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	api := ""
	switch {
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

// TestReadmeCommands runs every sh block of README.md, in order, as one
// shell session, swapping only hosts and ports for loopback ones.
func TestReadmeCommands(t *testing.T) {
	tools := harness.Require(t)
	readme, err := os.ReadFile(filepath.Join(tools.Root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	v := harness.StartDevVault(t)
	api := harness.Listen(t)
	apiSrv := &http.Server{Handler: http.HandlerFunc(standInAPI)}
	go apiSrv.Serve(api)
	t.Cleanup(func() { apiSrv.Close() })
	apiURL := "http://" + api.Addr().String()
	proxyPort, adminPort := harness.FreePort(t), harness.FreePort(t)

	hosts := strings.NewReplacer(
		"https://api.stripe.com", apiURL,
		"https://api.openai.com", apiURL,
		"https://api.anthropic.com", apiURL,
		"https://generativelanguage.googleapis.com", apiURL,
		"https://vault.internal:8200", v.Addr,
		"http://phantom.internal:8080", "http://127.0.0.1:"+strconv.Itoa(proxyPort),
		"0.0.0.0:8080", "127.0.0.1:"+strconv.Itoa(proxyPort),
		"127.0.0.1:9090", "127.0.0.1:"+strconv.Itoa(adminPort),
		"/etc/vault/plugins", v.PluginDir(),
	)
	blocks := regexp.MustCompile("(?s)```sh\n(.*?)```").FindAllStringSubmatch(string(readme), -1)
	var script strings.Builder
	script.WriteString("set -euo pipefail\n")
	ran := 0
	for i, b := range blocks {
		if strings.Contains(b[1], "make ") {
			continue // make demo and make test: CI runs those itself
		}
		fmt.Fprintf(&script, "echo '--- README block %d'\n%s\n", i, hosts.Replace(b[1]))
		if strings.Contains(b[1], "phantom-proxy -vault-addr") {
			// Glue, not README: wait until the proxy started above is ready.
			fmt.Fprintf(&script, "for _ in $(seq 100); do curl -fs http://127.0.0.1:%d/readyz >/dev/null && break; sleep 0.1; done\n", adminPort)
		}
		ran++
	}
	if ran < 8 {
		t.Fatalf("found only %d runnable README blocks", ran)
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
	cmd := exec.Command("bash", "-c", script.String())
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PATH="+binDir+":"+os.Getenv("PATH"), "HOME="+v.Home,
		"VAULT_ADDR="+v.Addr, "VAULT_TOKEN="+v.Token, "VAULT_FORMAT=", "PHANTOM_PLUGIN_BIN="+tools.Plugin)
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
		t.Fatalf("the README's commands failed: %v\n%s", err, got)
	}
	for _, want := range []string{`"api":"stripe","path":"/v1/customers"`, `"api":"openai","path":"/v1/models"`,
		`"api":"anthropic","path":"/v1/messages"`, `"api":"gemini","path":"/v1beta/models/gemini-2.5-flash"`,
		"ready", `phantom_proxy_requests_total{decision="allowed"`, "credential_fingerprint"} {
		if !strings.Contains(got, want) {
			t.Errorf("the README session's output lacks %q:\n%s", want, got)
		}
	}
	for name, key := range readmeKeys {
		for _, form := range []string{key, base64.StdEncoding.EncodeToString([]byte(key + ":"))} {
			if strings.Contains(got, form) {
				t.Errorf("the README session printed %s", name)
			}
		}
	}
}
