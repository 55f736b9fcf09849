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
		jwt := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		var body struct {
			Repositories []string          `json:"repositories"`
			Permissions  map[string]string `json:"permissions"`
		}
		json.NewDecoder(r.Body).Decode(&body)
		mu.Lock()
		defer mu.Unlock()
		jwts = append(jwts, jwt)
		if why := checkE2EAppJWT(&key.PublicKey, jwt); why != "" || r.URL.Path != "/app/installations/7/access_tokens" ||
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
// pub, iss 1001, iat a minute back, exp at most 10 minutes ahead.
func checkE2EAppJWT(pub *rsa.PublicKey, jwt string) string {
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
	if c.Iss != "1001" || c.Iat > now-50 || c.Iat < now-70 || c.Exp > now+600 || c.Exp < now+500 {
		return fmt.Sprintf("claims %+v", c)
	}
	return ""
}
