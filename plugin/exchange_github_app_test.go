package plugin

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

var testAppKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

func testAppKeyPEM() string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(testAppKey())}))
}

// githubStandIn is a stand-in GitHub token endpoint: it verifies the App
// JWT's RS256 signature against the public key and its claims, and that
// every request narrows within the route's repositories (phantom, docs) and
// permissions (contents=read, issues=write); it records each installation
// token's narrowing.
type githubStandIn struct {
	*httptest.Server
	calls     atomic.Int64
	mu        sync.Mutex
	mode      string // "", "block", "echo", "quote"
	gate      chan struct{}
	issued    int
	jwts      []string
	narrowing map[string]string // installation token -> "repos permissions" it was asked with
}

func newGitHubStandIn(t *testing.T) *githubStandIn {
	gh := &githubStandIn{gate: make(chan struct{}), narrowing: map[string]string{}}
	gh.Server = httptest.NewServer(http.HandlerFunc(gh.serve))
	t.Cleanup(func() {
		gh.set("")
		gh.Close()
	})
	return gh
}

func (gh *githubStandIn) set(mode string) {
	gh.mu.Lock()
	defer gh.mu.Unlock()
	if gh.mode == "block" {
		close(gh.gate)
		gh.gate = make(chan struct{})
	}
	gh.mode = mode
}

func (gh *githubStandIn) serve(w http.ResponseWriter, r *http.Request) {
	gh.calls.Add(1)
	gh.mu.Lock()
	mode, gate := gh.mode, gh.gate
	gh.mu.Unlock()
	if mode == "block" {
		<-gate
	}
	jwt, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	gh.mu.Lock()
	gh.jwts = append(gh.jwts, jwt)
	gh.mu.Unlock()
	var body struct {
		Repositories []string          `json:"repositories"`
		Permissions  map[string]string `json:"permissions"`
	}
	_ = json.NewDecoder(r.Body).Decode(&body)
	if err := checkAppJWT(jwt, "1234", time.Now()); err != nil || r.Method != http.MethodPost ||
		r.URL.Path != "/app/installations/42/access_tokens" || r.Header.Get("Accept") != "application/vnd.github+json" {
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprintf(w, `{"message":"bad credentials %v"}`, err)
		return
	}
	if !withinTestRoute(body.Repositories, body.Permissions) {
		w.WriteHeader(http.StatusUnprocessableEntity)
		fmt.Fprint(w, `{"message":"not narrowed"}`)
		return
	}
	switch mode {
	case "quote": // GitHub's message may quote what it got
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprintf(w, `{"message":"JWT %s is not valid"}`, jwt)
		return
	case "echo", "keyline": // the JWT, or a line of the key, as the token
		echoed := jwt
		if mode == "keyline" {
			echoed = strings.Split(testAppKeyPEM(), "\n")[5]
		}
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, `{"token":"ghs_%s","expires_at":%q}`, echoed, time.Now().Add(time.Hour).Format(time.RFC3339))
		return
	}
	gh.mu.Lock()
	gh.issued++
	tok := fmt.Sprintf("ghs_TESTinstallation%02d", gh.issued)
	gh.narrowing[tok] = strings.Join(body.Repositories, ",") + " " + permissionList(body.Permissions)
	gh.mu.Unlock()
	w.WriteHeader(http.StatusCreated)
	fmt.Fprintf(w, `{"token":%q,"expires_at":%q}`, tok, time.Now().Add(time.Hour).Format(time.RFC3339))
}

// withinTestRoute: narrowed, and within githubAppRoute's narrowing.
func withinTestRoute(repos []string, perms map[string]string) bool {
	levels := map[string][]string{"contents": {"read"}, "issues": {"read", "write"}}
	for _, r := range repos {
		if r != "phantom" && r != "docs" {
			return false
		}
	}
	for k, v := range perms {
		if !slices.Contains(levels[k], v) {
			return false
		}
	}
	return len(repos) > 0 && len(perms) > 0
}

// narrowed is the narrowing the installation token tok was asked with.
func (gh *githubStandIn) narrowed(tok any) string {
	gh.mu.Lock()
	defer gh.mu.Unlock()
	s, _ := tok.(string)
	return gh.narrowing[s]
}

// checkAppJWT verifies an App JWT as GitHub does.
func checkAppJWT(jwt, iss string, now time.Time) error {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return fmt.Errorf("not a JWT")
	}
	enc := base64.RawURLEncoding
	var header struct{ Alg, Typ string }
	var claims struct {
		Iat, Exp int64
		Iss      string
	}
	h, _ := enc.DecodeString(parts[0])
	c, _ := enc.DecodeString(parts[1])
	sig, _ := enc.DecodeString(parts[2])
	if json.Unmarshal(h, &header) != nil || header.Alg != "RS256" || json.Unmarshal(c, &claims) != nil {
		return fmt.Errorf("header or claims")
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(&testAppKey().PublicKey, crypto.SHA256, sum[:], sig); err != nil {
		return fmt.Errorf("signature: %w", err)
	}
	near := func(got int64, want time.Time) bool { return got >= want.Unix()-5 && got <= want.Unix()+5 }
	if claims.Iss != iss || !near(claims.Iat, now.Add(-time.Minute)) || !near(claims.Exp, now.Add(9*time.Minute)) {
		return fmt.Errorf("claims %+v", claims)
	}
	return nil
}

func githubAppRoute(apiURL string) map[string]any {
	return map[string]any{
		"upstream": "https://api.example.com", "allowed_paths": "/v1/**", "allowed_methods": "GET",
		"auth_type": authGitHubApp, "app_id": "1234", "installation_id": "42", "github_api_url": apiURL,
		"private_key": testAppKeyPEM(), "repositories": "phantom,docs", "permissions": "contents=read,issues=write",
	}
}

func TestGitHubAppOneFetchForConcurrentResolves(t *testing.T) {
	gh := newGitHubStandIn(t)
	clock := &fakeClock{now: time.Now()}
	e := newOAuth2Env(t, clock, &logical.InmemStorage{})
	e.ok(t, logical.UpdateOperation, "routes/gh", githubAppRoute(gh.URL))
	tok, _ := e.mint(t, "gh", nil)

	gh.set("block")
	done := make(chan []map[string]any)
	go func() { done <- e.resolveAll(t, tok, 16) }()
	for gh.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	gh.set("")
	for _, d := range <-done {
		wantAllowed(t, d)
		if d["credential"] != "ghs_TESTinstallation01" || d["auth_type"] != authBearer {
			t.Fatalf("grant %v", d)
		}
	}
	if n := gh.calls.Load(); n != 1 {
		t.Fatalf("16 concurrent resolves made %d calls, want 1", n)
	}
	// The token lives an hour: refreshed once, near its end.
	clock.Advance(30 * time.Minute)
	e.resolveAll(t, tok, 4)
	clock.Advance(20 * time.Minute)
	for _, d := range e.resolveAll(t, tok, 4) {
		if d["credential"] != "ghs_TESTinstallation02" {
			t.Fatalf("after 50 minutes: %v", d)
		}
	}
	if n := gh.calls.Load(); n != 2 {
		t.Fatalf("%d calls, want 2", n)
	}
	e.logHoldsNone(t, append([]string{testAppKeyPEM()}, gh.jwts...)...)
}

func TestGitHubAppEndpointQuotesOrEchoesNothing(t *testing.T) {
	gh := newGitHubStandIn(t)
	clock := &fakeClock{now: time.Now()}
	e := newOAuth2Env(t, clock, &logical.InmemStorage{})
	e.ok(t, logical.UpdateOperation, "routes/gh", githubAppRoute(gh.URL))
	tok, _ := e.mint(t, "gh", nil)
	for mode, want := range map[string]string{"quote": "answered 403", "echo": "secrets", "keyline": "secrets"} {
		gh.set(mode)
		d := e.resolve(t, tok, "GET", "/v1/x", "")
		wantDenied(t, d, "credential_exchange_failed")
		msg := d["message"].(string)
		if !strings.Contains(msg, want) || strings.Contains(msg, "JWT") || strings.Contains(msg, "ey") {
			t.Fatalf("%s: message %q", mode, msg)
		}
		clock.Advance(exchangeBackoff)
	}
	e.logHoldsNone(t, gh.jwts...)
}

func TestGitHubAppRouteFields(t *testing.T) {
	gh := newGitHubStandIn(t)
	e := newOAuth2Env(t, &fakeClock{now: time.Now()}, &logical.InmemStorage{})
	with := func(k string, v any) map[string]any {
		m := githubAppRoute(gh.URL)
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	for _, c := range []struct {
		field string
		value any
		want  string
	}{
		{"private_key", nil, "needs app_id, installation_id and private_key"},
		{"installation_id", "x1", "installation_id must be a positive number"},
		{"private_key", "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n", "not a readable RSA private key"},
		{"github_api_url", "http://github.example.com", "github_api_url: http would send"},
		{"repositories", "owner/repo", "not a repository name"},
		{"permissions", "contents=all", "read, write or admin"},
		{"credential", "x", "not credential"},
		{"token_url", "https://x.example", "applies only to auth_type=oauth2"},
	} {
		e.userError(t, logical.UpdateOperation, "routes/bad", with(c.field, c.value), c.want)
	}
	e.ok(t, logical.UpdateOperation, "routes/gh", githubAppRoute(gh.URL))
	read := e.ok(t, logical.ReadOperation, "routes/gh", nil).Data
	if read["private_key_fingerprint"] != fingerprint(testAppKeyPEM()) || read["app_id"] != "1234" || read["installation_id"] != "42" ||
		fmt.Sprint(read["repositories"]) != "[phantom docs]" || fmt.Sprint(read["permissions"]) != "map[contents:read issues:write]" {
		t.Fatalf("read = %v", read)
	}
	raw, _ := json.Marshal(read)
	if _, ok := read["credential_fingerprint"]; ok || strings.Contains(string(raw), "PRIVATE KEY") {
		t.Fatalf("read shows a key: %v", read)
	}
	// The key is bound to where its tokens go and what they may do.
	for field, value := range map[string]any{
		"upstream": "https://attacker.example", "installation_id": "43", "github_api_url": "https://ghe.attacker.example/api/v3",
		"repositories": "phantom", "permissions": "contents=write", "headers": "X-Tenant=other", "app_id": "99",
	} {
		e.userError(t, logical.UpdateOperation, "routes/gh", map[string]any{field: value}, "send private_key again")
	}
	e.ok(t, logical.UpdateOperation, "routes/gh", map[string]any{"installation_id": "43", "private_key": testAppKeyPEM()})
	e.ok(t, logical.UpdateOperation, "routes/gh", map[string]any{"allowed_methods": "GET,POST"})
}
