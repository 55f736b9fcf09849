package plugin

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

const (
	testGoogleEmail = "agent@phantom-test.iam.gserviceaccount.com"
	testGoogleKID   = "0123456789abcdef0123456789abcdef01234567"
	testGoogleScope = "https://www.googleapis.com/auth/cloud-platform"
)

// testGoogleKeyPEM is testAppKey as Google issues it: PKCS #8.
func testGoogleKeyPEM() string {
	der, err := x509.MarshalPKCS8PrivateKey(testAppKey())
	if err != nil {
		panic(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

// testGoogleKeyJSON is a service account's JSON key file for token_uri,
// with fields replaced (nil deletes one).
func testGoogleKeyJSON(tokenURI string, fields map[string]any) string {
	k := map[string]any{
		"type": "service_account", "project_id": "phantom-test", "private_key_id": testGoogleKID,
		"private_key": testGoogleKeyPEM(), "client_email": testGoogleEmail, "client_id": "1234567890",
		"auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": tokenURI,
	}
	for f, v := range fields {
		if v == nil {
			delete(k, f)
		} else {
			k[f] = v
		}
	}
	raw, _ := json.MarshalIndent(k, "", "  ")
	return string(raw)
}

// googleStandIn is a stand-in Google token endpoint: it takes only the JWT
// bearer grant, with a JWT signed by the key's private key and the claims
// Google checks.
type googleStandIn struct {
	*httptest.Server
	calls  atomic.Int64
	mu     sync.Mutex
	mode   string // "", "quote", "echo", "keyline", "der"
	sub    string // the sub every JWT must carry
	issued int
	jwts   []string
}

func newGoogleStandIn(t *testing.T) *googleStandIn {
	g := &googleStandIn{}
	g.Server = httptest.NewServer(http.HandlerFunc(g.serve))
	t.Cleanup(g.Close)
	return g
}

func (g *googleStandIn) serve(w http.ResponseWriter, r *http.Request) {
	g.calls.Add(1)
	_ = r.ParseForm()
	jwt := r.PostForm.Get("assertion")
	g.mu.Lock()
	defer g.mu.Unlock()
	g.jwts = append(g.jwts, jwt)
	w.Header().Set("Content-Type", "application/json")
	if err := checkGoogleJWT(&testAppKey().PublicKey, jwt, g.URL, g.sub); err != nil || r.Method != http.MethodPost ||
		r.PostForm.Get("grant_type") != jwtBearerGrant || g.mode == "quote" {
		w.WriteHeader(http.StatusBadRequest) // Google's description may quote what it got
		fmt.Fprintf(w, `{"error":"invalid_grant","error_description":"bad assertion %s: %v"}`, jwt, err)
		return
	}
	g.issued++
	tok := fmt.Sprintf("ya29.TESTaccess%02d_%s", g.issued, strings.Repeat("g", 16))
	der, _ := x509.MarshalPKCS8PrivateKey(testAppKey())
	switch g.mode {
	case "echo": // the JWT's signature as the token
		tok = "ya29." + jwt[strings.LastIndexByte(jwt, '.')+1:]
	case "keyline": // one line of the PEM
		tok = "ya29." + strings.Split(testGoogleKeyPEM(), "\n")[3]
	case "der": // the key's DER, in base64, as the token
		tok = "ya29." + base64.StdEncoding.EncodeToString(der)
	}
	fmt.Fprintf(w, `{"access_token":%q,"expires_in":3599,"token_type":"Bearer"}`, tok)
}

func (g *googleStandIn) set(mode string) {
	g.mu.Lock()
	g.mode = mode
	g.mu.Unlock()
}

// checkGoogleJWT verifies a service account's JWT as Google does: RS256 by
// pub, kid the key's id, iss the account, aud the token endpoint, the
// route's scope, an hour of life from now, sub when delegated.
func checkGoogleJWT(pub *rsa.PublicKey, jwt, aud, sub string) error {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return fmt.Errorf("not a JWT")
	}
	enc := base64.RawURLEncoding
	var header struct{ Alg, Typ, Kid string }
	var c struct {
		Iss, Aud, Scope, Sub string
		Iat, Exp             int64
	}
	h, _ := enc.DecodeString(parts[0])
	body, _ := enc.DecodeString(parts[1])
	sig, _ := enc.DecodeString(parts[2])
	if json.Unmarshal(h, &header) != nil || json.Unmarshal(body, &c) != nil {
		return fmt.Errorf("header or claims")
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig); err != nil {
		return fmt.Errorf("signature: %w", err)
	}
	now := time.Now().Unix()
	if header.Alg != "RS256" || header.Kid != testGoogleKID || c.Iss != testGoogleEmail || c.Aud != aud || c.Sub != sub ||
		c.Scope != testGoogleScope+" https://www.googleapis.com/auth/drive.readonly" ||
		c.Iat < now-5 || c.Iat > now+5 || c.Exp != c.Iat+3600 {
		return fmt.Errorf("header %+v claims %+v", header, c)
	}
	return nil
}

func googleRoute(tokenURI string) map[string]any {
	return map[string]any{
		"upstream": "https://storage.googleapis.com", "allowed_paths": "/v1/**", "allowed_methods": "GET",
		"auth_type": authGoogleServiceAccount, "service_account_key": testGoogleKeyJSON(tokenURI, nil),
		"scopes": testGoogleScope + ",https://www.googleapis.com/auth/drive.readonly",
	}
}

func TestGoogleServiceAccountOneFetchPerLifetime(t *testing.T) {
	g := newGoogleStandIn(t)
	g.sub = "admin@example.com"
	clock := &fakeClock{now: time.Now()}
	e := newOAuth2Env(t, clock, &logical.InmemStorage{})
	route := googleRoute(g.URL)
	route["subject"] = g.sub
	e.ok(t, logical.UpdateOperation, "routes/gcp", route)
	tok, _ := e.mint(t, "gcp", nil)

	for _, d := range e.resolveAll(t, tok, 16) {
		wantAllowed(t, d)
		if d["credential"] != "ya29.TESTaccess01_"+strings.Repeat("g", 16) || d["auth_type"] != authBearer {
			t.Fatalf("grant %v", d)
		}
	}
	if n := g.calls.Load(); n != 1 {
		t.Fatalf("16 concurrent resolves made %d calls, want 1", n)
	}
	clock.Advance(30 * time.Minute)
	e.resolveAll(t, tok, 4)
	clock.Advance(20 * time.Minute) // past 80% of the hour
	for _, d := range e.resolveAll(t, tok, 4) {
		if !strings.HasPrefix(fmt.Sprint(d["credential"]), "ya29.TESTaccess02_") {
			t.Fatalf("after 50 minutes: %v", d)
		}
	}
	if n := g.calls.Load(); n != 2 {
		t.Fatalf("%d calls, want 2", n)
	}
	e.logHoldsNone(t, append([]string{testGoogleKeyPEM(), strings.Split(testGoogleKeyPEM(), "\n")[2]}, g.jwts...)...)
}

// TestGoogleServiceAccountEndpointQuotesOrEchoesNothing: an endpoint that
// quotes the assertion in its error, or hands back a token holding the
// JWT's signature or the private key, gives the agent no part of them.
func TestGoogleServiceAccountEndpointQuotesOrEchoesNothing(t *testing.T) {
	g := newGoogleStandIn(t)
	clock := &fakeClock{now: time.Now()}
	e := newOAuth2Env(t, clock, &logical.InmemStorage{})
	e.ok(t, logical.UpdateOperation, "routes/gcp", googleRoute(g.URL))
	tok, _ := e.mint(t, "gcp", nil)
	for mode, want := range map[string]string{"quote": "answered 400 (invalid_grant)", "echo": "secrets", "keyline": "secrets", "der": "secrets"} {
		g.set(mode)
		d := e.resolve(t, tok, "GET", "/v1/x", "")
		wantDenied(t, d, "credential_exchange_failed")
		if msg := d["message"].(string); !strings.Contains(msg, want) || strings.Contains(msg, "assertion") || strings.Contains(msg, "ey") {
			t.Fatalf("%s: message %q", mode, msg)
		}
		clock.Advance(exchangeBackoff)
	}
	g.set("")
	wantAllowed(t, e.resolve(t, tok, "GET", "/v1/x", ""))
	e.logHoldsNone(t, g.jwts...)
}
