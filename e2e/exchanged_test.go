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

// tokenIssuer is what the stand-in token endpoints share: a failure mode,
// a count of calls, and the access tokens issued with their expiry.
type tokenIssuer struct {
	mu     sync.Mutex
	mode   string
	calls  int
	issued []string
	expiry map[string]time.Time
}

// issue records an access token that lives life; the caller holds mu.
func (s *tokenIssuer) issue(at string, life time.Duration) {
	if s.expiry == nil {
		s.expiry = map[string]time.Time{}
	}
	s.issued, s.expiry[at] = append(s.issued, at), time.Now().Add(life)
}

func (s *tokenIssuer) set(mode string) {
	s.mu.Lock()
	s.mode = mode
	s.mu.Unlock()
}

func (s *tokenIssuer) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// tokenUpstream is an upstream that takes only live access tokens of its
// issuer, and echoes the Authorization it got, as a hostile upstream would.
type tokenUpstream struct {
	*harness.Upstream
	mu    sync.Mutex
	auths []string
}

func startTokenUpstream(t *testing.T, issuer *tokenIssuer) *tokenUpstream {
	u := &tokenUpstream{}
	u.Upstream = harness.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		u.mu.Lock()
		u.auths = append(u.auths, auth)
		u.mu.Unlock()
		issuer.mu.Lock()
		exp, known := issuer.expiry[strings.TrimPrefix(auth, "Bearer ")]
		issuer.mu.Unlock()
		if !known || time.Now().After(exp.Add(time.Second)) { // a second of slack for the clocks of a loaded host
			http.Error(w, `{"error":"invalid_token","got":"`+auth+`"}`, 401)
			return
		}
		w.Header().Set("X-Echo", auth)
		fmt.Fprintf(w, `{"ok":true,"auth":%q}`, auth)
	}))
	return u
}

// sawOnly fails for each Authorization the upstream got that is not one of
// issued.
func (u *tokenUpstream) sawOnly(t *testing.T, issued []string) {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, auth := range u.auths {
		if !slices.Contains(issued, strings.TrimPrefix(auth, "Bearer ")) {
			t.Errorf("the upstream got an Authorization that is no access token: %.20s...", auth)
		}
	}
}
