package e2e

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/phantomvault/phantom/e2e/harness"
)

// pythonWithRequests returns a python3 that can import requests: Debian's
// /usr/bin/python3 with python3-requests (.ci/run installs it), else the
// python3 on PATH.
func pythonWithRequests(t *testing.T) string {
	t.Helper()
	var tried []string
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		path, err := exec.LookPath(py)
		if err != nil {
			continue
		}
		if out, err := exec.Command(path, "-c", "import requests").CombinedOutput(); err != nil {
			tried = append(tried, fmt.Sprintf("%s: %s", path, strings.TrimSpace(string(out))))
			continue
		}
		return path
	}
	needTool(t, fmt.Errorf("no python3 with requests (apt-get install python3-requests): %s", strings.Join(tried, "; ")))
	return ""
}

// TestPythonAgents runs requests, unchanged and configured only by base URL
// and key, through the real stack on a route that injects the key as Basic
// auth and one that injects it as a query parameter: the upstream gets the
// real key in its place and never the phantom token.
func TestPythonAgents(t *testing.T) {
	tools := harness.Require(t)
	python := pythonWithRequests(t)
	const (
		stripeKey = "sk_live_E2Epython0stripe0key0never0shown0"
		geminiKey = "AIzaE2Epython0gemini0key0never0shown0001"
	)
	api := harness.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.URL.Path == "/v1/customers" && r.Header.Get("Authorization") == "Basic "+base64.StdEncoding.EncodeToString([]byte(stripeKey+":")):
			fmt.Fprintf(w, `{"api":"stripe","limit":%q}`, r.URL.Query().Get("limit"))
		case r.URL.Path == "/v1beta/models/gemini-2.5-flash:generateContent" && r.URL.Query().Get("key") == geminiKey &&
			strings.Contains(string(body), `"text": "hi"`):
			io.WriteString(w, `{"api":"gemini"}`)
		default:
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error":"invalid key"}`)
		}
	}))

	v := harness.StartDevVault(t)
	v.MustCLI(t, "write", "phantom/routes/stripe", "upstream="+api.URL, "allowed_paths=/v1/customers", "allowed_methods=GET",
		"auth_type=basic", "credential="+stripeKey)
	v.MustCLI(t, "write", "phantom/routes/gemini", "upstream="+api.URL, "allowed_paths=/v1beta/models/**", "allowed_methods=POST",
		"auth_type=query", "auth_query_param=key", "credential="+geminiKey)
	p := harness.StartProxy(t, v)
	stripeTok, _ := v.Mint(t, "stripe", "ttl=1h")
	geminiTok, _ := v.Mint(t, "gemini", "ttl=1h")

	for _, c := range []struct {
		scenario, want string
		env            []string
	}{
		{"basic", `{"api": "stripe", "limit": "3"}`, []string{"STRIPE_BASE_URL=" + p.URL, "STRIPE_API_KEY=" + stripeTok}},
		{"query", `{"api": "gemini"}`, []string{"GEMINI_BASE_URL=" + p.URL, "GEMINI_API_KEY=" + geminiTok}},
	} {
		cmd := exec.Command(python, filepath.Join(tools.Root, "e2e", "python", "agent.py"), c.scenario)
		cmd.Env = append(os.Environ(), append([]string{"NO_PROXY=*", "PYTHONDONTWRITEBYTECODE=1"}, c.env...)...)
		out, err := cmd.Output()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("agent.py %s: %v\n%s%s", c.scenario, err, out, ee.Stderr)
		} else if err != nil {
			t.Fatal(err)
		}
		var res struct {
			Status   int
			Body     json.RawMessage
			Requests string
		}
		if err := json.Unmarshal(out, &res); err != nil {
			t.Fatalf("agent.py %s printed %q: %v", c.scenario, out, err)
		}
		t.Logf("%s (requests %s): %d %s", c.scenario, res.Requests, res.Status, res.Body)
		var got, want any
		json.Unmarshal(res.Body, &got)
		json.Unmarshal([]byte(c.want), &want)
		if res.Status != 200 || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: %d %s, want 200 %s", c.scenario, res.Status, res.Body, c.want)
		}
	}
	var received []string
	for _, r := range api.Requests() {
		received = append(received, r.Header.Get("Authorization")+" "+r.URI+" "+string(r.Body))
	}
	log := strings.Join(received, "\n")
	if strings.Contains(log, stripeTok) || strings.Contains(log, geminiTok) ||
		strings.Contains(log, base64.StdEncoding.EncodeToString([]byte(stripeTok+":"))) {
		t.Fatalf("a phantom token reached the upstream:\n%s", log)
	}
}
