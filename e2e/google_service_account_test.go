package e2e

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
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/phantomvault/phantom/e2e/harness"
)

const (
	googleE2EEmail = "phantom-e2e@phantom-test.iam.gserviceaccount.com"
	googleE2EKID   = "e2e0kid0123456789abcdef0123456789abcdef0"
	googleE2EScope = "https://www.googleapis.com/auth/devstorage.read_only"
)

// googleServer is a stand-in Google token endpoint: the JWT bearer grant
// only, the JWT verified against the service account's public key with the
// claims Google checks, access tokens living 6 s (refreshed after 3 s). It
// counts calls and can fail.
type googleServer struct {
	tokenIssuer // mode: "", "500", "malformed"
	pub         *rsa.PublicKey
	aud         string
	bad, jwts   []string
}

func (s *googleServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	r.ParseForm()
	jwt := r.PostForm.Get("assertion")
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	s.jwts = append(s.jwts, jwt)
	w.Header().Set("Content-Type", "application/json")
	switch s.mode {
	case "500":
		http.Error(w, "internal error", 500)
		return
	case "malformed":
		fmt.Fprint(w, `{"access_token":`)
		return
	}
	if why := s.check(jwt); why != "" || r.PostForm.Get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		s.bad = append(s.bad, why)
		w.WriteHeader(400) // quoting what it got, as endpoints may
		fmt.Fprintf(w, `{"error":"invalid_grant","error_description":"Invalid JWT %s"}`, jwt)
		return
	}
	at := fmt.Sprintf("ya29.e2eACCESS%03d_%s", len(s.issued)+1, strings.Repeat("k", 24))
	s.issue(at, 6*time.Second)
	fmt.Fprintf(w, `{"access_token":%q,"expires_in":6,"token_type":"Bearer"}`, at)
}

// check is "" for a JWT Google would take: RS256 by the account's key,
// kid its id, iss the account, aud the endpoint, the route's scope, an hour
// of life.
func (s *googleServer) check(jwt string) string {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return "not a JWT"
	}
	enc := base64.RawURLEncoding
	sig, _ := enc.DecodeString(parts[2])
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if rsa.VerifyPKCS1v15(s.pub, crypto.SHA256, sum[:], sig) != nil {
		return "bad signature"
	}
	var h struct{ Alg, Kid string }
	var c struct {
		Iss, Aud, Scope string
		Iat, Exp        int64
	}
	raw, _ := enc.DecodeString(parts[0])
	json.Unmarshal(raw, &h)
	raw, _ = enc.DecodeString(parts[1])
	json.Unmarshal(raw, &c)
	now := time.Now().Unix()
	if h.Alg != "RS256" || h.Kid != googleE2EKID || c.Iss != googleE2EEmail || c.Aud != s.aud || c.Scope != googleE2EScope ||
		c.Iat < now-10 || c.Iat > now+10 || c.Exp != c.Iat+3600 {
		return fmt.Sprintf("header %+v claims %+v", h, c)
	}
	return ""
}

// TestGoogleServiceAccountThroughTheStack: a google_service_account route
// through real Vault, the plugin binary and two proxies. Each burst of 2 × 20
// concurrent requests costs one call to the token endpoint per token
// lifetime, whose JWT checks hold; the upstream sees only live access
// tokens; a failing endpoint is a clear 502 with nothing forwarded, and the
// route recovers by itself; the JSON key and its private key are in no byte
// the agent gets, no proxy log, audit line, route read or resolve answer,
// and not in the proxies' memory, which does hold the access token.
func TestGoogleServiceAccountThroughTheStack(t *testing.T) {
	v := harness.StartPersistentVault(t)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	keyPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	google := &googleServer{pub: &key.PublicKey}
	endpoint := harness.StartUpstream(t, google)
	google.aud = endpoint.URL + "/token"
	keyJSON, _ := json.MarshalIndent(map[string]string{
		"type": "service_account", "project_id": "phantom-test", "private_key_id": googleE2EKID, "private_key": keyPEM,
		"client_email": googleE2EEmail, "client_id": "1000", "token_uri": google.aud,
	}, "", "  ")
	keyFile := filepath.Join(t.TempDir(), "key.json")
	if err := os.WriteFile(keyFile, keyJSON, 0o600); err != nil {
		t.Fatal(err)
	}
	up := startTokenUpstream(t, &google.tokenIssuer)
	v.MustCLI(t, "write", "phantom/routes/gcs", "upstream="+up.URL, "auth_type=google_service_account",
		"service_account_key=@"+keyFile, "scopes="+googleE2EScope, "allowed_paths=/storage/v1/**", "allowed_methods=GET")
	a := &agent{t: t, path: "/storage/v1/b/bucket/o", proxies: []*harness.Proxy{harness.StartProxy(t, v), harness.StartProxy(t, v)}}
	a.tok, _ = v.Mint(t, "gcs", "ttl=1h")

	a.burst(20)
	if n := google.count(); n != 1 {
		t.Fatalf("2 proxies x 20 concurrent requests made %d token fetches, want 1 (refused: %v)", n, google.bad)
	}
	time.Sleep(6500 * time.Millisecond) // the token has expired
	a.burst(20)
	if n := google.count(); n != 2 {
		t.Fatalf("after one expiry, %d token fetches in all, want 2", n)
	}
	for _, mode := range []string{"500", "malformed"} {
		a.failThenRecover(mode, up.Upstream, func() { google.set(mode) }, func() { google.set("") })
	}

	// What the proxy's AppRole gets: the access token, nothing else.
	code, answer := a.resolveAsProxy(v)
	data, _ := answer["data"].(map[string]any)
	google.mu.Lock()
	issued, jwts, bad := slices.Clone(google.issued), slices.Clone(google.jwts), slices.Clone(google.bad)
	google.mu.Unlock()
	if code != 200 || !slices.Contains(issued, fmt.Sprint(data["credential"])) || data["auth_type"] != "bearer" {
		t.Fatalf("resolve: %d %v", code, answer)
	}
	if len(bad) > 0 {
		t.Fatalf("the endpoint refused JWTs: %v", bad)
	}
	up.sawOnly(t, issued)

	// The JSON key and its private key (PEM, its lines, its bytes in
	// base64) and every JWT are nowhere the agent or the proxies reach.
	b64 := base64.StdEncoding.EncodeToString(der)
	lines := strings.Split(keyPEM, "\n")
	a.holdsNone(map[string]string{"the resolve answer": fmt.Sprint(answer), "Vault's log": v.Log.String(),
		"the route read": v.MustCLI(t, "read", "-format=json", "phantom/routes/gcs")},
		append([]string{string(keyJSON), keyPEM, lines[1], lines[len(lines)/2], b64}, jwts...), issued)
	a.memoryHoldsNone([][]byte{keyJSON, []byte(lines[1]), []byte(lines[len(lines)/2]), der[:64], der[len(der)/2 : len(der)/2+64], []byte(jwts[0])}, issued)
}
