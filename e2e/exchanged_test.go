package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phantomvault/phantom/e2e/harness"
)

// agent sends one phantom token's requests through proxies, as the agents
// of an exchanged route's tests, and keeps every byte they received.
type agent struct {
	t         *testing.T
	tok, path string
	proxies   []*harness.Proxy
	mu        sync.Mutex
	seen      bytes.Buffer
}

func (a *agent) call(p *harness.Proxy) (int, string) {
	code, body, h := p.Do(a.t, "GET", a.path, a.tok, "", nil)
	a.mu.Lock()
	defer a.mu.Unlock()
	h.Write(&a.seen)
	a.seen.WriteString(body)
	return code, body
}

// received is every byte the agent received.
func (a *agent) received() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.seen.String()
}

// burst sends n concurrent requests through each proxy; each must succeed.
func (a *agent) burst(n int) {
	a.t.Helper()
	var wg sync.WaitGroup
	failed := make(chan string, n*len(a.proxies))
	for _, p := range a.proxies {
		for range n {
			wg.Go(func() {
				if code, body := a.call(p); code != 200 {
					failed <- fmt.Sprintf("%d %s", code, body)
				}
			})
		}
	}
	wg.Wait()
	close(failed)
	for f := range failed {
		a.t.Fatalf("a request of the burst failed: %s", f)
	}
}

// failThenRecover: once fail() breaks the token endpoint (past the refresh
// point of the current token), a request through the first proxy is a 502
// credential_exchange_failed with nothing forwarded to up; once heal()
// mends it, the route serves again through the second by itself.
func (a *agent) failThenRecover(what string, up *harness.Upstream, fail, heal func()) {
	a.t.Helper()
	time.Sleep(3200 * time.Millisecond) // past the refresh point of the current token
	fail()
	before := up.Count()
	if code, body := a.call(a.proxies[0]); code != 502 || !strings.Contains(body, "credential_exchange_failed") {
		a.t.Fatalf("%s: %d %s", what, code, body)
	}
	if up.Count() != before {
		a.t.Fatalf("%s: a request reached the upstream without a token", what)
	}
	heal()
	for range 100 {
		if code, _ := a.call(a.proxies[len(a.proxies)-1]); code == 200 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	a.t.Fatalf("%s: the route did not recover with the endpoint", what)
}

// resolveAsProxy is the resolve answer the proxies' AppRole gets for the
// agent's request.
func (a *agent) resolveAsProxy(v *harness.Vault) (int, map[string]any) {
	proxyToken := v.AppRoleLogin(a.t, v.RoleIDFile, v.SecretIDFile)
	return v.API(a.t, http.MethodPatch, "phantom/resolve", proxyToken, map[string]any{"token": a.tok, "method": "GET", "path": a.path})
}

// holdsNone fails for each of secrets found in what the agent received, in
// texts, or in any proxy's log or audit file; the first proxy's audit file
// must record the failed exchanges. issued (access tokens) must not reach
// the agent unmasked.
func (a *agent) holdsNone(texts map[string]string, secrets, issued []string) {
	a.t.Helper()
	texts["what the agent received"] = a.received()
	for i, p := range a.proxies {
		audit, err := os.ReadFile(p.AuditFile)
		if err != nil {
			a.t.Fatal(err)
		}
		if i == 0 && !strings.Contains(string(audit), "credential_exchange_failed") {
			a.t.Error("the audit file does not record the failed exchanges' reason")
		}
		texts[fmt.Sprintf("proxy %d's log", i)], texts[fmt.Sprintf("proxy %d's audit file", i)] = p.Out.String(), string(audit)
	}
	for name, text := range texts {
		for _, s := range secrets {
			if strings.Contains(text, s) {
				a.t.Errorf("%s holds a secret (%.10s...)", name, s)
			}
		}
	}
	for _, at := range issued {
		if strings.Contains(texts["what the agent received"], at) {
			a.t.Errorf("what the agent received holds an access token unmasked (%.14s...)", at)
		}
	}
}

// memoryHoldsNone fails when a proxy's memory holds one of secrets, or
// none of issued (the control: a scan that finds no access token reads the
// wrong memory). Each proxy first handles a request, so the current access
// token is in its hands.
func (a *agent) memoryHoldsNone(secrets [][]byte, issued []string) {
	a.t.Helper()
	for i, p := range a.proxies {
		a.call(p)
		needles := slices.Clone(secrets)
		for _, at := range issued {
			needles = append(needles, []byte(at))
		}
		found := harness.MemoryContains(a.t, p.PID(), needles...)
		for j, f := range found[:len(secrets)] {
			if f {
				a.t.Errorf("proxy %d's memory holds a secret (needle %d)", i, j)
			}
		}
		if !slices.Contains(found[len(secrets):], true) {
			a.t.Errorf("proxy %d's memory holds no access token: the scan reads the wrong memory", i)
		}
	}
}
