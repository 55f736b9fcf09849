package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phantomvault/phantom/e2e/harness"
)

// TestRotatedRefreshTokenSurvivesFailover: an oauth2_refresh_token route on
// a 3-node Raft cluster, behind one proxy given every node. A burst of
// requests rotates the refresh token once; then the active node is killed
// (SIGKILL: nothing is flushed on the way out). The node elected next has
// never seen the rotated refresh token but in storage, and the stand-in
// endpoint takes each refresh token once: the next burst is served, with
// one more fetch made with the rotated token, and no refresh token is ever
// presented twice.
func TestRotatedRefreshTokenSurvivesFailover(t *testing.T) {
	nodes := harness.StartRaftCluster(t, 3)
	oauth := &oauthServer{validRT: oauthRefresh}
	endpoint := harness.StartUpstream(t, oauth)
	up := harness.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		oauth.mu.Lock()
		_, known := oauth.expiry[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
		oauth.mu.Unlock()
		if !known {
			http.Error(w, `{"error":"invalid_token"}`, 401)
			return
		}
		fmt.Fprint(w, `{"ok":true}`)
	}))
	nodes[0].MustCLI(t, "write", "phantom/routes/api", "upstream="+up.URL, "auth_type=oauth2_refresh_token",
		"token_url="+endpoint.URL+"/oauth/token", "client_id="+oauthClientID, "client_secret="+oauthClientSecret,
		"refresh_token="+oauthRefresh, "allowed_paths=/v1/**", "allowed_methods=GET")
	p := harness.StartProxy(t, nodes[1], "-vault-addr="+harness.Addrs(nodes))
	tok, _ := nodes[0].Mint(t, "api", "ttl=1h")

	burst := func(when string) {
		t.Helper()
		var wg sync.WaitGroup
		failed := make(chan string, 10)
		for range 10 {
			wg.Go(func() {
				if code, body := p.Call(t, "GET", "/v1/things", tok); code != 200 {
					failed <- fmt.Sprintf("%d %s", code, body)
				}
			})
		}
		wg.Wait()
		close(failed)
		for f := range failed {
			t.Fatalf("%s: a request failed: %s", when, f)
		}
	}
	burst("before the failover")
	if n := oauth.count(); n != 1 {
		t.Fatalf("10 concurrent requests made %d token fetches, want 1", n)
	}
	fetched := time.Now()

	var leader *harness.Vault
	for _, n := range nodes {
		if n.Active() {
			leader = n
		}
	}
	if leader == nil {
		t.Fatal("no active node")
	}
	leader.Crash()
	var elected *harness.Vault
	for deadline := time.Now().Add(90 * time.Second); elected == nil; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no new active node within 90s")
		}
		for _, n := range nodes {
			if n != leader && n.Active() {
				elected = n
			}
		}
	}
	// Past the access token's refresh point (3 s of its 6), so the new
	// active node must refresh, with the refresh token it finds stored.
	time.Sleep(time.Until(fetched.Add(3500 * time.Millisecond)))
	servesAgainOn(t, p, tok, 60*time.Second)
	burst("after the failover")

	oauth.mu.Lock()
	defer oauth.mu.Unlock()
	if oauth.calls != len(oauth.issued) {
		t.Fatalf("the endpoint refused %d of %d calls: a refresh token was presented twice or the client was wrong",
			oauth.calls-len(oauth.issued), oauth.calls)
	}
	if len(oauth.issued) < 2 {
		t.Fatalf("%d fetches in all: the new active node did not refresh", len(oauth.issued))
	}
}

// servesAgainOn waits for tok's GET /v1/things through p to get 200.
func servesAgainOn(t *testing.T, p *harness.Proxy, tok string, timeout time.Duration) {
	t.Helper()
	var code int
	var body string
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if code, body = p.Call(t, "GET", "/v1/things", tok); code == 200 {
			return
		}
	}
	t.Fatalf("the proxy did not serve again after the failover: %d %s\n%s", code, body, p.Out)
}
