package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/phantomvault/phantom/e2e/harness"
)

const (
	oauthClientID     = "phantom-e2e-client"
	oauthClientSecret = "cs_e2eCLIENTsecretNEVERleavesVAULT0001"
	oauthRefresh      = "rt_e2eREFRESHtokenFROMtheADMIN00000001"
)

// oauthServer is a stand-in OAuth2 token endpoint: refresh grants only,
// client authenticated by HTTP Basic, each refresh token good once (it
// rotates), access tokens living 6 s (refreshed after 3 s: a burst on a loaded host
// stays within one token). It counts calls, and can fail in the
// ways real endpoints do.
type oauthServer struct {
	tokenIssuer // mode: "", "drop", "500", "slow", "malformed", "invalid_grant"
	validRT     string
	rts         []string // every refresh token it rotated to
}

func (s *oauthServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.calls++
	mode := s.mode
	s.mu.Unlock()
	r.ParseForm()
	id, secret, _ := r.BasicAuth()
	w.Header().Set("Content-Type", "application/json")
	switch mode {
	case "drop": // as a host that is down: the connection just ends
		conn, _, _ := w.(http.Hijacker).Hijack()
		conn.Close()
		return
	case "500":
		http.Error(w, "internal error", 500)
		return
	case "slow":
		time.Sleep(3 * time.Second) // beyond what a resolve waits
	case "malformed":
		fmt.Fprint(w, `{"access_token":`)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if id != oauthClientID || secret != oauthClientSecret || r.Form.Get("grant_type") != "refresh_token" {
		w.WriteHeader(401)
		fmt.Fprintf(w, `{"error":"invalid_client","error_description":"got %s:%s"}`, id, secret)
		return
	}
	if got := r.Form.Get("refresh_token"); got != s.validRT || mode == "invalid_grant" {
		w.WriteHeader(400) // quoting what it got, secrets included
		fmt.Fprintf(w, `{"error":"invalid_grant","error_description":"refresh token %s is revoked (client secret %s)"}`, got, secret)
		return
	}
	n := len(s.issued) + 1
	at := fmt.Sprintf("at_e2eACCESS%03d_%s", n, strings.Repeat("q", 20))
	s.validRT = fmt.Sprintf("rt_e2eROTATED%03d_%s", n, strings.Repeat("r", 20))
	s.rts = append(s.rts, s.validRT)
	s.issue(at, 6*time.Second)
	json.NewEncoder(w).Encode(map[string]any{"access_token": at, "token_type": "bearer", "expires_in": 6, "refresh_token": s.validRT})
}

// TestOAuth2ThroughTheStack: an oauth2_refresh_token route through real
// Vault, the plugin binary and two proxies. Each burst of 2 × 20 concurrent
// requests costs one call to the token endpoint per token lifetime; the
// upstream sees only live access tokens; a failing endpoint is a clear 502
// with nothing forwarded, and the route recovers by itself; the client
// secret and every refresh token are in no byte the agent gets, no proxy
// log, audit line or resolve answer, and not in the proxies' memory, which
// does hold the access token.
func TestOAuth2ThroughTheStack(t *testing.T) {
	v := harness.StartPersistentVault(t)
	oauth := &oauthServer{validRT: oauthRefresh}
	endpoint := harness.StartUpstream(t, oauth)
	up := startTokenUpstream(t, &oauth.tokenIssuer)
	v.MustCLI(t, "write", "phantom/routes/api", "upstream="+up.URL, "auth_type=oauth2_refresh_token",
		"token_url="+endpoint.URL+"/oauth/token", "client_id="+oauthClientID, "client_secret="+oauthClientSecret,
		"refresh_token="+oauthRefresh, "allowed_paths=/v1/**", "allowed_methods=GET")
	a := &agent{t: t, path: "/v1/things", proxies: []*harness.Proxy{harness.StartProxy(t, v), harness.StartProxy(t, v)}}
	a.tok, _ = v.Mint(t, "api", "ttl=1h")

	a.burst(20)
	if n := oauth.count(); n != 1 {
		t.Fatalf("2 proxies x 20 concurrent requests made %d token fetches, want 1", n)
	}
	time.Sleep(6500 * time.Millisecond) // the token has expired
	a.burst(20)
	if n := oauth.count(); n != 2 {
		t.Fatalf("after one expiry, %d token fetches in all, want 2", n)
	}

	// The endpoint fails in each way: a clear 502, nothing forwarded; then
	// it recovers, and so does the route.
	for _, mode := range []string{"drop", "500", "slow", "malformed", "invalid_grant"} {
		a.failThenRecover(mode, up.Upstream, func() { oauth.set(mode) }, func() {
			oauth.set("")
			if mode == "invalid_grant" { // a revoked refresh token takes an admin's new one
				oauth.mu.Lock()
				oauth.validRT = "rt_e2eADMINnewREFRESH000000000000002"
				oauth.mu.Unlock()
				v.MustCLI(t, "write", "phantom/routes/api", "refresh_token=rt_e2eADMINnewREFRESH000000000000002")
			}
		})
	}

	// What the proxy's AppRole gets: the access token, nothing else.
	code, answer := a.resolveAsProxy(v)
	data, _ := answer["data"].(map[string]any)
	oauth.mu.Lock()
	issued, rotated := slices.Clone(oauth.issued), slices.Clone(oauth.rts)
	oauth.mu.Unlock()
	if code != 200 || !slices.Contains(issued, fmt.Sprint(data["credential"])) || data["auth_type"] != "bearer" {
		t.Fatalf("resolve: %d %v", code, answer)
	}
	up.sawOnly(t, issued)

	secrets := append([]string{oauthClientSecret, oauthRefresh, "rt_e2eADMINnewREFRESH000000000000002"}, rotated...)
	a.holdsNone(map[string]string{"the resolve answer": fmt.Sprint(answer), "Vault's log": v.Log.String()}, secrets, issued)
	var needles [][]byte
	for _, s := range secrets {
		needles = append(needles, []byte(s))
	}
	a.memoryHoldsNone(needles, issued)
}
