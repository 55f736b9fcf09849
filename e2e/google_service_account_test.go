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
	"path/filepath"
	"slices"
	"strings"
	"sync"
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
	pub     *rsa.PublicKey
	aud     string
	mu      sync.Mutex
	mode    string // "", "500", "malformed"
	calls   int
	bad     []string
	jwts    []string
	issued  []string
	expires map[string]time.Time
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
	s.issued = append(s.issued, at)
	s.expires[at] = time.Now().Add(6 * time.Second)
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

func (s *googleServer) set(mode string) {
	s.mu.Lock()
	s.mode = mode
	s.mu.Unlock()
}

func (s *googleServer) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
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
	google := &googleServer{pub: &key.PublicKey, expires: map[string]time.Time{}}
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
	var upMu sync.Mutex
	var upAuth []string
	up := harness.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		upMu.Lock()
		upAuth = append(upAuth, auth)
		upMu.Unlock()
		google.mu.Lock()
		exp, known := google.expires[strings.TrimPrefix(auth, "Bearer ")]
		google.mu.Unlock()
		if !known || time.Now().After(exp.Add(time.Second)) { // a second of slack for a loaded host
			http.Error(w, `{"error":"invalid_token","got":"`+auth+`"}`, 401)
			return
		}
		w.Header().Set("X-Echo", auth) // a hostile upstream echoes the key
		fmt.Fprintf(w, `{"ok":true,"auth":%q}`, auth)
	}))
	v.MustCLI(t, "write", "phantom/routes/gcs", "upstream="+up.URL, "auth_type=google_service_account",
		"service_account_key=@"+keyFile, "scopes="+googleE2EScope, "allowed_paths=/storage/v1/**", "allowed_methods=GET")
	proxies := []*harness.Proxy{harness.StartProxy(t, v), harness.StartProxy(t, v)}
	tok, _ := v.Mint(t, "gcs", "ttl=1h")

	var seenMu sync.Mutex
	var seen bytes.Buffer // every byte an agent received
	call := func(p *harness.Proxy) (int, string) {
		code, body, h := p.Do(t, "GET", "/storage/v1/b/bucket/o", tok, "", nil)
		seenMu.Lock()
		h.Write(&seen)
		seen.WriteString(body)
		seenMu.Unlock()
		return code, body
	}
	burst := func() {
		t.Helper()
		var wg sync.WaitGroup
		failed := make(chan string, 40)
		for _, p := range proxies {
			for range 20 {
				wg.Go(func() {
					if code, body := call(p); code != 200 {
						failed <- fmt.Sprintf("%d %s", code, body)
					}
				})
			}
		}
		wg.Wait()
		close(failed)
		for f := range failed {
			t.Fatalf("a request of the burst failed: %s", f)
		}
	}

	burst()
	if n := google.count(); n != 1 {
		t.Fatalf("2 proxies x 20 concurrent requests made %d token fetches, want 1 (refused: %v)", n, google.bad)
	}
	time.Sleep(6500 * time.Millisecond) // the token has expired
	burst()
	if n := google.count(); n != 2 {
		t.Fatalf("after one expiry, %d token fetches in all, want 2", n)
	}

	// The endpoint fails: a clear 502, nothing forwarded; then it recovers,
	// and so does the route.
	for _, mode := range []string{"500", "malformed"} {
		time.Sleep(3200 * time.Millisecond) // past the refresh point of the current token
		google.set(mode)
		before := up.Count()
		if code, body := call(proxies[0]); code != 502 || !strings.Contains(body, "credential_exchange_failed") {
			t.Fatalf("%s: %d %s", mode, code, body)
		}
		if up.Count() != before {
			t.Fatalf("%s: a request reached the upstream without a token", mode)
		}
		google.set("")
		recovered := false
		for range 100 {
			if code, _ := call(proxies[1]); code == 200 {
				recovered = true
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if !recovered {
			t.Fatalf("%s: the route did not recover with the endpoint", mode)
		}
	}

	// What the proxy's AppRole gets: the access token, nothing else.
	proxyToken := v.AppRoleLogin(t, v.RoleIDFile, v.SecretIDFile)
	code, answer := v.API(t, http.MethodPatch, "phantom/resolve", proxyToken, map[string]any{"token": tok, "method": "GET", "path": "/storage/v1/b/bucket/o"})
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
	upMu.Lock()
	for _, auth := range upAuth {
		if !slices.Contains(issued, strings.TrimPrefix(auth, "Bearer ")) {
			t.Errorf("the upstream got an Authorization that is no access token: %.20s...", auth)
		}
	}
	upMu.Unlock()

	b64 := base64.StdEncoding.EncodeToString(der)
	lines := strings.Split(keyPEM, "\n")
	secrets := append([]string{string(keyJSON), keyPEM, lines[1], lines[len(lines)/2], b64}, jwts...)
	texts := map[string]string{"what the agent received": seen.String(), "the resolve answer": fmt.Sprint(answer),
		"the route read": v.MustCLI(t, "read", "-format=json", "phantom/routes/gcs"), "Vault's log": v.Log.String()}
	for i, p := range proxies {
		audit, err := os.ReadFile(p.AuditFile)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 && !strings.Contains(string(audit), "credential_exchange_failed") {
			t.Error("the audit file does not record the failed exchanges' reason")
		}
		texts[fmt.Sprintf("proxy %d's log", i)], texts[fmt.Sprintf("proxy %d's audit file", i)] = p.Out.String(), string(audit)
	}
	for name, text := range texts {
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("%s holds the key or a JWT (%.16s...)", name, s)
			}
		}
	}
	for _, at := range issued {
		if strings.Contains(seen.String(), at) {
			t.Errorf("what the agent received holds an access token unmasked (%.14s...)", at)
		}
	}
	for i, p := range proxies {
		call(p) // the current access token is in this proxy's hands
		needles := [][]byte{keyJSON, []byte(lines[1]), []byte(lines[len(lines)/2]), der[:64], der[len(der)/2 : len(der)/2+64], []byte(jwts[0])}
		controls := len(needles)
		for _, at := range issued {
			needles = append(needles, []byte(at))
		}
		found := harness.MemoryContains(t, p.PID(), needles...)
		for j, f := range found[:controls] {
			if f {
				t.Errorf("proxy %d's memory holds the key or a JWT (needle %d)", i, j)
			}
		}
		if !slices.Contains(found[controls:], true) {
			t.Errorf("proxy %d's memory holds no access token: the scan reads the wrong memory", i)
		}
	}
}
