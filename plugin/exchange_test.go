package plugin

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"
)

const (
	testClientID     = "phantom-client"
	testClientSecret = "cs_TESTclientSECRETneverLEAVESvault01"
	testRefreshToken = "rt_TESTrefreshTOKENzero0000000000000"
)

// tokenEndpoint is a stand-in OAuth2 token endpoint: it checks the client's
// Basic auth and, for refresh grants, that the refresh token is the one it
// last issued; it counts calls and rotates refresh tokens when asked.
type tokenEndpoint struct {
	*httptest.Server
	calls atomic.Int64

	mu        sync.Mutex
	mode      string        // "", "500", "malformed", "echo", "block"
	gate      chan struct{} // mode "block" waits on it
	expiresIn int
	rotate    bool
	validRT   string // the refresh token it accepts
	issued    int
}

func newTokenEndpoint(t *testing.T) *tokenEndpoint {
	te := &tokenEndpoint{expiresIn: 300, validRT: testRefreshToken, gate: make(chan struct{})}
	te.Server = httptest.NewServer(http.HandlerFunc(te.serve))
	t.Cleanup(func() {
		te.open()
		te.Close()
	})
	return te
}

func (te *tokenEndpoint) open() {
	te.mu.Lock()
	defer te.mu.Unlock()
	select {
	case <-te.gate:
	default:
		close(te.gate)
	}
}

func (te *tokenEndpoint) set(f func(*tokenEndpoint)) {
	te.mu.Lock()
	defer te.mu.Unlock()
	f(te)
}

func (te *tokenEndpoint) serve(w http.ResponseWriter, r *http.Request) {
	te.calls.Add(1)
	te.mu.Lock()
	mode, gate := te.mode, te.gate
	te.mu.Unlock()
	if mode == "block" {
		<-gate
	}
	_ = r.ParseForm()
	id, secret, _ := r.BasicAuth()
	w.Header().Set("Content-Type", "application/json")
	switch {
	case mode == "500":
		http.Error(w, "down", http.StatusInternalServerError)
		return
	case mode == "malformed":
		fmt.Fprint(w, `{"access_token": 12}`)
		return
	case mode == "basicecho": // hands back the client's Basic credential as a token
		fmt.Fprintf(w, `{"access_token":%q,"expires_in":300}`, strings.TrimPrefix(r.Header.Get("Authorization"), "Basic "))
		return
	case mode == "echo": // quotes what it got, as some endpoints do
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"error":"invalid_client","error_description":"bad secret %s / %s / %s"}`, secret, r.Form.Get("refresh_token"), r.Header.Get("Authorization"))
		return
	case id != testClientID || secret != testClientSecret:
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"error":"invalid_client"}`)
		return
	}
	te.mu.Lock()
	defer te.mu.Unlock()
	answer := map[string]any{"token_type": "Bearer", "expires_in": te.expiresIn}
	if r.Form.Get("grant_type") == "refresh_token" {
		if r.Form.Get("refresh_token") != te.validRT {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprintf(w, `{"error":"invalid_grant","error_description":"refresh token %s is not valid"}`, r.Form.Get("refresh_token"))
			return
		}
		if te.rotate || mode == "rotecho" {
			te.validRT = fmt.Sprintf("rt_TESTrotated%02d_%s", te.issued+1, strings.Repeat("x", 16))
			answer["refresh_token"] = te.validRT
		}
		if mode == "rotecho" { // the live refresh token as the access token
			answer["access_token"] = te.validRT
			json.NewEncoder(w).Encode(answer)
			return
		}
	} else if r.Form.Get("grant_type") != "client_credentials" || r.Form.Get("scope") != "read write" {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"error":"invalid_request"}`)
		return
	}
	te.issued++
	answer["access_token"] = fmt.Sprintf("at_TESTaccess%02d_%s", te.issued, strings.Repeat("a", 16))
	json.NewEncoder(w).Encode(answer)
}

// oauth2Env is a test backend whose log the test reads.
type oauth2Env struct {
	*testEnv
	log *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newOAuth2Env(t *testing.T, clock *fakeClock, storage logical.Storage) *oauth2Env {
	t.Helper()
	b := newBackend(clock.Now, rand.Reader)
	conf := logical.TestBackendConfig()
	conf.StorageView = storage
	buf := &syncBuffer{}
	conf.Logger = hclog.New(&hclog.LoggerOptions{Output: buf, Level: hclog.Trace})
	if err := b.Setup(context.Background(), conf); err != nil {
		t.Fatal(err)
	}
	b.exchanges.wait = 10 * time.Second // deterministic: a resolve waits for the fetch
	return &oauth2Env{testEnv: &testEnv{b: b, storage: &countingStorage{Storage: storage}, clock: clock}, log: buf}
}

func (e *oauth2Env) writeOAuth2Route(t *testing.T, name, kind, tokenURL string, extra map[string]any) {
	t.Helper()
	data := map[string]any{
		"upstream": "https://api.example.com", "allowed_paths": "/v1/**", "allowed_methods": "GET,POST",
		"auth_type": kind, "token_url": tokenURL, "client_id": testClientID, "client_secret": testClientSecret,
	}
	if kind == authOAuth2ClientCredentials {
		data["scopes"] = "read,write"
	} else {
		data["refresh_token"] = testRefreshToken
	}
	for k, v := range extra {
		data[k] = v
	}
	e.ok(t, logical.UpdateOperation, "routes/"+name, data)
}

// logHoldsNone fails when the engine's log holds one of secrets.
func (e *oauth2Env) logHoldsNone(t *testing.T, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if strings.Contains(e.log.String(), s) {
			t.Fatalf("the engine's log holds a secret (%.10s...)", s)
		}
	}
}

// resolveAll runs n resolves at once and returns their answers.
func (e *oauth2Env) resolveAll(t *testing.T, tok string, n int) []map[string]any {
	out := make([]map[string]any, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { out[i] = e.resolve(t, tok, "GET", "/v1/things", "") })
	}
	wg.Wait()
	return out
}

func TestOAuth2OneFetchForConcurrentResolves(t *testing.T) {
	te := newTokenEndpoint(t)
	clock := &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	storage := &logical.InmemStorage{}
	e := newOAuth2Env(t, clock, storage)
	e.writeOAuth2Route(t, "api", authOAuth2ClientCredentials, te.URL, nil)
	tok, _ := e.mint(t, "api", nil)

	te.set(func(te *tokenEndpoint) { te.mode = "block" }) // every resolve arrives while the fetch is in flight
	done := make(chan []map[string]any)
	go func() { done <- e.resolveAll(t, tok, 32) }()
	for te.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond) // let the others join (or not: the count holds either way)
	te.set(func(te *tokenEndpoint) { te.mode = "" })
	te.open()
	for _, d := range <-done {
		wantAllowed(t, d)
		if d["credential"] != "at_TESTaccess01_"+strings.Repeat("a", 16) || d["auth_type"] != authBearer || d["auth_format"] != "Bearer {{credential}}" {
			t.Fatalf("grant %v", d)
		}
	}
	if n := te.calls.Load(); n != 1 {
		t.Fatalf("32 concurrent resolves made %d calls to the token endpoint, want 1", n)
	}
	puts := e.storage.puts.Load()
	e.resolveAll(t, tok, 8)
	if te.calls.Load() != 1 || e.storage.puts.Load() != puts {
		t.Fatal("a resolve with a fresh token called the endpoint or wrote storage")
	}

	// Another node on the same storage uses the stored token.
	other := newOAuth2Env(t, clock, storage)
	wantAllowed(t, other.resolve(t, tok, "GET", "/v1/things", ""))
	if te.calls.Load() != 1 {
		t.Fatal("a second node fetched its own token instead of the stored one")
	}

	// Near expiry (80% of 300 s is after 60 s before): one new fetch.
	clock.Advance(241 * time.Second)
	for _, d := range e.resolveAll(t, tok, 16) {
		wantAllowed(t, d)
		if d["credential"] != "at_TESTaccess02_"+strings.Repeat("a", 16) {
			t.Fatalf("after expiry the grant has %v", d["credential"])
		}
	}
	if n := te.calls.Load(); n != 2 {
		t.Fatalf("%d calls after one expiry, want 2", n)
	}
}

func TestRefreshAfter(t *testing.T) {
	for life, want := range map[time.Duration]time.Duration{
		time.Hour: 48 * time.Minute, 2 * time.Minute: time.Minute, 3 * time.Second: 1500 * time.Millisecond, 100 * time.Second: 50 * time.Second,
	} {
		if got := refreshAfter(life); got != want {
			t.Errorf("refreshAfter(%s) = %s, want %s", life, got, want)
		}
	}
}

func TestOAuth2RefreshTokenRotation(t *testing.T) {
	te := newTokenEndpoint(t)
	te.set(func(te *tokenEndpoint) { te.rotate = true })
	clock := &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	storage := &failingStorage{Storage: &logical.InmemStorage{}}
	e := newOAuth2Env(t, clock, storage)
	e.writeOAuth2Route(t, "api", authOAuth2RefreshToken, te.URL, nil)
	tok, _ := e.mint(t, "api", nil)

	wantAllowed(t, e.resolve(t, tok, "GET", "/v1/things", ""))
	rec := storedExchange(t, storage, "api")
	if rec.RefreshToken != te.validRT || rec.RefreshToken == testRefreshToken {
		t.Fatalf("the rotated refresh token was not stored: %q", rec.RefreshToken)
	}
	// After expiry the rotated one is used (the endpoint refuses the first),
	// and a restarted node (no memory) uses the stored one too.
	clock.Advance(time.Hour)
	wantAllowed(t, e.resolve(t, tok, "GET", "/v1/things", ""))
	clock.Advance(time.Hour)
	wantAllowed(t, newOAuth2Env(t, clock, storage).resolve(t, tok, "GET", "/v1/things", ""))
	if n := te.calls.Load(); n != 3 {
		t.Fatalf("%d calls, want 3", n)
	}

	// Storage refuses the next rotation: the access token is not used, the
	// last stored refresh token stays, and the new one is used next.
	good := storedExchange(t, storage, "api").RefreshToken
	storage.failPuts.Store(true)
	clock.Advance(time.Hour)
	d := e.resolve(t, tok, "GET", "/v1/things", "")
	wantDenied(t, d, "credential_exchange_failed")
	if got := storedExchange(t, storage, "api").RefreshToken; got != good {
		t.Fatal("a failed write lost the last good refresh token")
	}
	storage.failPuts.Store(false)
	clock.Advance(exchangeBackoff)
	wantAllowed(t, e.resolve(t, tok, "GET", "/v1/things", ""))
	if got := storedExchange(t, storage, "api").RefreshToken; got != te.validRT {
		t.Fatal("the refresh token rotated during the failed write was not used and stored next")
	}

	// An admin's new refresh token replaces the rotated lineage.
	te.set(func(te *tokenEndpoint) { te.validRT = "rt_TESTadminNEWrefresh000000000000" })
	e.ok(t, logical.UpdateOperation, "routes/api", map[string]any{"refresh_token": "rt_TESTadminNEWrefresh000000000000"})
	wantAllowed(t, e.resolve(t, tok, "GET", "/v1/things", ""))
}

// failingStorage fails writes of access tokens when told to.
type failingStorage struct {
	logical.Storage
	failPuts atomic.Bool
}

func (s *failingStorage) Put(ctx context.Context, e *logical.StorageEntry) error {
	if s.failPuts.Load() && strings.HasPrefix(e.Key, exchangePrefix) {
		return errors.New("storage is down")
	}
	return s.Storage.Put(ctx, e)
}

func storedExchange(t *testing.T, s logical.Storage, name string) *exchangeRecord {
	t.Helper()
	rec, err := readJSON[exchangeRecord](context.Background(), s, exchangePrefix+name)
	if err != nil || rec == nil {
		t.Fatalf("no stored access token: %v", err)
	}
	return rec
}

func TestOAuth2EndpointFailureAndRecovery(t *testing.T) {
	te := newTokenEndpoint(t)
	clock := &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	e := newOAuth2Env(t, clock, &logical.InmemStorage{})
	e.writeOAuth2Route(t, "api", authOAuth2RefreshToken, te.URL, nil)
	tok, _ := e.mint(t, "api", nil)

	for _, c := range []struct{ mode, want string }{
		{"500", "answered 500"}, {"malformed", "not a JSON token answer"}, {"echo", "answered 400 (invalid_client)"},
	} {
		te.set(func(te *tokenEndpoint) { te.mode = c.mode })
		before := te.calls.Load()
		d := e.resolve(t, tok, "GET", "/v1/things", "")
		wantDenied(t, d, "credential_exchange_failed")
		if !strings.Contains(d["message"].(string), c.want) {
			t.Fatalf("%s: message %q", c.mode, d["message"])
		}
		// Within the backoff: refused without a call.
		wantDenied(t, e.resolve(t, tok, "GET", "/v1/things", ""), "credential_exchange_failed")
		if te.calls.Load() != before+1 {
			t.Fatalf("%s: the endpoint was called again within the backoff", c.mode)
		}
		clock.Advance(exchangeBackoff)
	}

	// A revoked refresh token.
	te.set(func(te *tokenEndpoint) { te.mode, te.validRT = "", "rt_someOTHERtoken000000000000" })
	d := e.resolve(t, tok, "GET", "/v1/things", "")
	wantDenied(t, d, "credential_exchange_failed")
	if !strings.Contains(d["message"].(string), "(invalid_grant)") {
		t.Fatalf("message %q", d["message"])
	}
	// The endpoint recovers: so does the route, after the backoff.
	te.set(func(te *tokenEndpoint) { te.validRT = testRefreshToken })
	clock.Advance(exchangeBackoff)
	wantAllowed(t, e.resolve(t, tok, "GET", "/v1/things", ""))

	// A slow endpoint: resolves stop waiting, the fetch goes on, and the
	// next resolve after it gets its token.
	clock.Advance(time.Hour)
	e.b.exchanges.wait = 20 * time.Millisecond
	te.set(func(te *tokenEndpoint) { te.mode, te.gate = "block", make(chan struct{}) })
	calls := te.calls.Load()
	d = e.resolve(t, tok, "GET", "/v1/things", "")
	wantDenied(t, d, "credential_exchange_failed")
	wantDenied(t, e.resolve(t, tok, "GET", "/v1/things", ""), "credential_exchange_failed")
	te.open()
	var allowed bool
	for range 500 {
		if d = e.resolve(t, tok, "GET", "/v1/things", ""); d["allowed"] == true {
			allowed = true
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !allowed || te.calls.Load() != calls+1 {
		t.Fatalf("after a slow fetch: allowed=%v, %d calls (want 1)", allowed, te.calls.Load()-calls)
	}

	// One that never answers: the call is bounded.
	clock.Advance(time.Hour)
	e.b.exchanges.wait, e.b.exchanges.timeout = 10*time.Second, 50*time.Millisecond
	te.set(func(te *tokenEndpoint) { te.mode, te.gate = "block", make(chan struct{}) })
	d = e.resolve(t, tok, "GET", "/v1/things", "")
	wantDenied(t, d, "credential_exchange_failed")
	if !strings.Contains(d["message"].(string), "in time") {
		t.Fatalf("message %q", d["message"])
	}
	te.open()

	for _, secret := range []string{testClientSecret, testRefreshToken} {
		if strings.Contains(e.log.String(), secret) {
			t.Fatalf("the engine's log holds a secret the endpoint echoed:\n%s", e.log.String())
		}
	}
	if !strings.Contains(e.log.String(), "getting an access token failed") {
		t.Fatal("failures are not logged")
	}
}
