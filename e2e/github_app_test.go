package e2e

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phantomvault/phantom/e2e/harness"
)

// TestGitHubAppThroughTheStack: a github_app route through real Vault, the
// plugin binary and a proxy. Concurrent requests cost one call to the
// stand-in GitHub, whose JWT checks hold; the upstream sees only
// installation tokens; the private key is in no byte the agent gets, no
// proxy log, audit line or resolve answer, and not in the proxy's memory,
// which does hold the installation token.
func TestGitHubAppThroughTheStack(t *testing.T) {
	v := harness.StartPersistentVault(t)
	key, der, keyPEM := newE2EAppKey(t)

	var mu sync.Mutex
	var issued, jwts, bad []string
	github := harness.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		jwt, body := appTokenRequest(r)
		mu.Lock()
		defer mu.Unlock()
		jwts = append(jwts, jwt)
		if why := checkE2EAppJWT(&key.PublicKey, "1001", jwt); why != "" || r.URL.Path != "/app/installations/7/access_tokens" ||
			!slices.Equal(body.Repositories, []string{"phantom"}) || body.Permissions["contents"] != "read" {
			bad = append(bad, fmt.Sprintf("%s %s %v", why, r.URL.Path, body))
			w.WriteHeader(401)
			fmt.Fprintf(w, `{"message":"A JWT could not be decoded: %s"}`, jwt)
			return
		}
		tok := fmt.Sprintf("ghs_e2eINSTALLATION%03d%s", len(issued)+1, strings.Repeat("z", 20))
		issued = append(issued, tok)
		w.WriteHeader(201)
		fmt.Fprintf(w, `{"token":%q,"expires_at":%q}`, tok, time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	}))
	var upAuth []string
	up := harness.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		upAuth = append(upAuth, r.Header.Get("Authorization"))
		mu.Unlock()
		fmt.Fprintf(w, `{"ok":true,"auth":%q}`, r.Header.Get("Authorization")) // a hostile upstream echoes the key
	}))
	v.MustCLI(t, "write", "phantom/routes/gh", "upstream="+up.URL, "auth_type=github_app", "app_id=1001",
		"installation_id=7", "github_api_url="+github.URL, "private_key="+keyPEM, "repositories=phantom",
		"permissions=contents=read", "allowed_paths=/repos/**", "allowed_methods=GET")
	p := harness.StartProxy(t, v)
	tok, _ := v.Mint(t, "gh", "ttl=1h")

	var seen bytes.Buffer
	var wg sync.WaitGroup
	var seenMu sync.Mutex
	for range 8 {
		wg.Go(func() {
			code, body, h := p.Do(t, "GET", "/repos/o/phantom", tok, "", nil)
			seenMu.Lock()
			defer seenMu.Unlock()
			h.Write(&seen)
			seen.WriteString(body)
			if code != 200 {
				t.Errorf("a request failed: %d %s", code, body)
			}
		})
	}
	wg.Wait()
	mu.Lock()
	if len(jwts) != 1 || len(bad) > 0 {
		t.Fatalf("8 concurrent requests made %d token calls (want 1); refused: %v", len(jwts), bad)
	}
	for _, auth := range upAuth {
		if !slices.Contains(issued, strings.TrimPrefix(auth, "Bearer ")) {
			t.Errorf("the upstream got an Authorization that is no installation token: %.20s...", auth)
		}
	}
	mu.Unlock()

	proxyToken := v.AppRoleLogin(t, v.RoleIDFile, v.SecretIDFile)
	code, answer := v.API(t, http.MethodPatch, "phantom/resolve", proxyToken, map[string]any{"token": tok, "method": "GET", "path": "/repos/o/phantom"})
	data, _ := answer["data"].(map[string]any)
	if code != 200 || data["credential"] != issued[0] || data["auth_type"] != "bearer" {
		t.Fatalf("resolve: %d %v", code, answer)
	}
	route := v.MustCLI(t, "read", "-format=json", "phantom/routes/gh")

	b64 := base64.StdEncoding.EncodeToString(der)
	secrets := []string{keyPEM, b64[:64], b64[len(b64)/2 : len(b64)/2+64], jwts[0]}
	audit, err := os.ReadFile(p.AuditFile)
	if err != nil {
		t.Fatal(err)
	}
	texts := map[string]string{"what the agent received": seen.String(), "the resolve answer": fmt.Sprint(answer),
		"the route read": route, "the proxy's log": p.Out.String(), "the proxy's audit file": string(audit), "Vault's log": v.Log.String()}
	for name, text := range texts {
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("%s holds the key or a JWT (%.16s...)", name, s)
			}
		}
	}
	if strings.Contains(seen.String(), issued[0]) {
		t.Error("what the agent received holds the installation token unmasked")
	}
	p.Do(t, "GET", "/repos/o/phantom", tok, "", nil)
	needles := [][]byte{[]byte(b64[:64]), der[:64], der[len(der)/2 : len(der)/2+64], []byte(jwts[0]), []byte(issued[0])}
	found := harness.MemoryContains(t, p.PID(), needles...)
	for i, f := range found[:4] {
		if f {
			t.Errorf("the proxy's memory holds the private key or a JWT (needle %d)", i)
		}
	}
	if !found[4] {
		t.Error("the proxy's memory holds no installation token: the scan reads the wrong memory")
	}
}

// appTokenRequest reads a request for an installation token: the App's
// JWT and the narrowing asked for.
func appTokenRequest(r *http.Request) (jwt string, body appNarrowing) {
	json.NewDecoder(r.Body).Decode(&body)
	return strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "), body
}

type appNarrowing struct {
	Repositories []string          `json:"repositories"`
	Permissions  map[string]string `json:"permissions"`
}

// newE2EAppKey is a GitHub App's private key, its PKCS #1 bytes and PEM.
func newE2EAppKey(t *testing.T) (*rsa.PrivateKey, []byte, string) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der := x509.MarshalPKCS1PrivateKey(key)
	return key, der, string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: der}))
}

// checkE2EAppJWT is "" for a JWT GitHub would take from the App: RS256 by
// pub, iss the App id, iat a minute back, exp at most 10 minutes ahead.
func checkE2EAppJWT(pub *rsa.PublicKey, iss, jwt string) string {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return "not a JWT"
	}
	enc := base64.RawURLEncoding
	sig, _ := enc.DecodeString(parts[2])
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig) != nil {
		return "bad signature"
	}
	var c struct {
		Iss      string
		Iat, Exp int64
	}
	raw, _ := enc.DecodeString(parts[1])
	json.Unmarshal(raw, &c)
	now := time.Now().Unix()
	if c.Iss != iss || c.Iat > now-50 || c.Iat < now-70 || c.Exp > now+600 || c.Exp < now+500 {
		return fmt.Sprintf("claims %+v", c)
	}
	return ""
}

// TestGitHubAppNarrowedTokens: tokens of one github_app route minted with
// narrower repositories and permissions, through real Vault, the plugin
// binary and a proxy. The stand-in GitHub sees exactly each token's
// narrowing in its token request (the route-wide token the route's); many
// concurrent requests (which the proxy batches) cost one token request per
// narrowing; every request upstream carries its own token's installation
// token, never another narrowing's.
func TestGitHubAppNarrowedTokens(t *testing.T) {
	v := harness.StartPersistentVault(t)
	key, _, keyPEM := newE2EAppKey(t)

	var mu sync.Mutex
	asked := map[string]string{} // installation token -> the narrowing it was asked with
	var bad []string
	github := harness.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		jwt, body := appTokenRequest(r)
		time.Sleep(150 * time.Millisecond) // the concurrent requests pile up behind the fetch
		mu.Lock()
		defer mu.Unlock()
		if why := checkE2EAppJWT(&key.PublicKey, "1001", jwt); why != "" {
			bad = append(bad, why)
			w.WriteHeader(401)
			return
		}
		tok := fmt.Sprintf("ghs_e2eNARROW%03d%s", len(asked)+1, strings.Repeat("n", 20))
		asked[tok] = narrowingOf(body.Repositories, body.Permissions)
		w.WriteHeader(201)
		fmt.Fprintf(w, `{"token":%q,"expires_at":%q}`, tok, time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	}))
	upAuth := map[string][]string{} // the path's last segment (which token) -> Authorization seen
	up := harness.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		who := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
		upAuth[who] = append(upAuth[who], strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		mu.Unlock()
		fmt.Fprint(w, `{"ok":true}`)
	}))
	v.MustCLI(t, "write", "phantom/routes/gh", "upstream="+up.URL, "auth_type=github_app", "app_id=1001",
		"installation_id=7", "github_api_url="+github.URL, "private_key="+keyPEM, "repositories=phantom,docs",
		"permissions=contents=read,issues=write", "allowed_paths=/repos/**", "allowed_methods=GET")
	p := harness.StartProxy(t, v)

	tokens := map[string]string{}
	tokens["wide"], _ = v.Mint(t, "gh", "ttl=1h")
	tokens["phantom"], _ = v.Mint(t, "gh", "ttl=1h", "repositories=phantom", "permissions=contents=read")
	tokens["docs"], _ = v.Mint(t, "gh", "ttl=1h", "repositories=docs")
	want := map[string]string{
		"wide":    "docs,phantom contents=read,issues=write",
		"phantom": "phantom contents=read",
		"docs":    "docs contents=read,issues=write",
	}
	if _, stderr, err := v.Run(t, "read", "phantom/token/gh", "repositories=phantom,other"); err == nil || !strings.Contains(stderr, "other is wider than the route allows") {
		t.Fatalf("a wider mint: %v %s", err, stderr)
	}

	var wg sync.WaitGroup
	for range 8 {
		for who, tok := range tokens {
			wg.Go(func() {
				if code, body, _ := p.Do(t, "GET", "/repos/o/"+who, tok, "", nil); code != 200 {
					t.Errorf("%s: %d %s", who, code, body)
				}
			})
		}
	}
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 || len(asked) != 3 || !slices.Equal(slices.Sorted(maps.Values(asked)), slices.Sorted(maps.Values(want))) {
		t.Fatalf("24 concurrent requests of 3 narrowings made %d token requests, asked with %v (want one each of %v); refused: %v",
			len(asked), slices.Collect(maps.Values(asked)), slices.Collect(maps.Values(want)), bad)
	}
	for who, auths := range upAuth {
		for _, auth := range auths {
			if got, ok := asked[auth]; !ok || got != want[who] {
				t.Errorf("a request of the %s token reached the upstream with an installation token asked with %q, want %q", who, got, want[who])
			}
		}
	}
	if n := len(upAuth["wide"]) + len(upAuth["phantom"]) + len(upAuth["docs"]); n != 24 {
		t.Errorf("the upstream saw %d requests, want 24", n)
	}
}

// narrowingOf writes a token request's narrowing as "repos perms", sorted.
func narrowingOf(repos []string, perms map[string]string) string {
	pairs := []string{}
	for _, k := range slices.Sorted(maps.Keys(perms)) {
		pairs = append(pairs, k+"="+perms[k])
	}
	return strings.Join(slices.Sorted(slices.Values(repos)), ",") + " " + strings.Join(pairs, ",")
}
