package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/proxy/inject"
)

func TestOAuth2RouteFields(t *testing.T) {
	te := newTokenEndpoint(t)
	e := newOAuth2Env(t, &fakeClock{now: time.Now()}, &logical.InmemStorage{})
	base := map[string]any{"upstream": "https://api.example.com", "allowed_paths": "/v1/**", "allowed_methods": "GET",
		"auth_type": authOAuth2ClientCredentials, "token_url": te.URL, "client_id": testClientID, "client_secret": testClientSecret}
	with := func(k string, v any) map[string]any {
		m := map[string]any{}
		for k, v := range base {
			m[k] = v
		}
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
		{"token_url", nil, "needs token_url and client_id"},
		{"client_id", nil, "needs token_url and client_id"},
		{"client_secret", nil, "needs client_secret"},
		{"token_url", "http://auth.example.com/token", "token_url: http would send"},
		{"token_url", "https://user:pw@auth.example.com/token", "token_url: must not carry user info"},
		{"scopes", `read,"write"`, "not a scope token"},
		{"credential", "x", "not credential"},
		{"refresh_token", testRefreshToken, "only to auth_type=oauth2_refresh_token"},
		{"auth_header", "X-Key", "do not apply"},
		{"client_secret", testClientSecret + "\n", "client_secret contains a line break"},
	} {
		e.userError(t, logical.UpdateOperation, "routes/bad", with(c.field, c.value), c.want)
	}
	e.userError(t, logical.UpdateOperation, "routes/bad", map[string]any{"upstream": "https://api.example.com", "allowed_paths": "/v1/**",
		"allowed_methods": "GET", "credential": testCredential, "token_url": te.URL}, "applies only to auth_type=oauth2")
	e.userError(t, logical.UpdateOperation, "routes/bad", with("auth_type", authOAuth2RefreshToken), "needs refresh_token")

	e.ok(t, logical.UpdateOperation, "routes/api", with("scopes", "read,write"))
	read := e.ok(t, logical.ReadOperation, "routes/api", nil).Data
	if read["client_secret_fingerprint"] != fingerprint(testClientSecret) || read["token_url"] != te.URL ||
		read["client_id"] != testClientID || fmt.Sprint(read["scopes"]) != "[read write]" {
		t.Fatalf("read = %v", read)
	}
	if _, ok := read["credential_fingerprint"]; ok || strings.Contains(fmt.Sprint(read), testClientSecret) {
		t.Fatalf("read shows a credential: %v", read)
	}
}

// TestOAuth2SecretsAreBoundToTheEndpoint: a write that changes where the
// secrets go, or what the token they buy may do, must send them again.
func TestOAuth2SecretsAreBoundToTheEndpoint(t *testing.T) {
	te := newTokenEndpoint(t)
	e := newOAuth2Env(t, &fakeClock{now: time.Now()}, &logical.InmemStorage{})
	e.writeOAuth2Route(t, "cc", authOAuth2ClientCredentials, te.URL, nil)
	e.writeOAuth2Route(t, "rt", authOAuth2RefreshToken, te.URL, nil)
	for field, value := range map[string]any{
		"token_url": "https://attacker.example/token", "client_id": "other", "scopes": "admin", "audience": "https://other.example",
		"upstream": "https://attacker.example", "headers": "X-Tenant=other", "allow_http": true,
	} {
		e.userError(t, logical.UpdateOperation, "routes/cc", map[string]any{field: value}, "send client_secret again")
		e.userError(t, logical.UpdateOperation, "routes/rt", map[string]any{field: value}, "send client_secret and refresh_token again")
		e.userError(t, logical.UpdateOperation, "routes/rt", map[string]any{field: value, "client_secret": testClientSecret}, "send client_secret and refresh_token again")
	}
	e.userError(t, logical.UpdateOperation, "routes/cc", map[string]any{"auth_type": "bearer"}, "credential is required")
	// Rotating a secret alone, or changing what is not a destination, is fine.
	e.ok(t, logical.UpdateOperation, "routes/cc", map[string]any{"client_secret": testClientSecret})
	e.ok(t, logical.UpdateOperation, "routes/rt", map[string]any{"allowed_methods": "GET"})
	e.ok(t, logical.UpdateOperation, "routes/cc", map[string]any{"token_url": te.URL + "/v2", "client_secret": testClientSecret})
}

// TestOAuth2GrantIsABearerAccessToken: the grant holds only the access token,
// which the proxy's Validate and inject take as any bearer key.
func TestOAuth2GrantIsABearerAccessToken(t *testing.T) {
	te := newTokenEndpoint(t)
	e := newOAuth2Env(t, &fakeClock{now: time.Now()}, &logical.InmemStorage{})
	e.writeOAuth2Route(t, "api", authOAuth2ClientCredentials, te.URL, nil)
	tok, _ := e.mint(t, "api", nil)
	d := e.resolve(t, tok, "GET", "/v1/x", "")
	raw, _ := json.Marshal(d)
	var a resolve.Answer
	if err := json.Unmarshal(raw, &a); err != nil {
		t.Fatal(err)
	}
	g, err := a.Validate()
	if err != nil {
		t.Fatal(err)
	}
	style, err := inject.For(g)
	if err != nil {
		t.Fatal(err)
	}
	h, ok := style.(*inject.Header)
	if !ok || h.Name != "Authorization" || h.Value != "Bearer at_TESTaccess01_"+strings.Repeat("a", 16) {
		t.Fatalf("style %#v", style)
	}
	// A batch carries it too, fetched once.
	resp := e.ok(t, logical.PatchOperation, "resolve", map[string]any{"requests": []any{
		map[string]any{"token": tok, "method": "GET", "path": "/v1/a"}, map[string]any{"token": tok, "method": "GET", "path": "/v1/b"},
	}})
	routes := resp.Data["routes"].(map[string]any)
	if routes["api"].(map[string]any)["credential"] != h.Value[len("Bearer "):] || te.calls.Load() != 1 {
		t.Fatalf("batch grant %v, %d calls", routes, te.calls.Load())
	}
}

// TestOAuth2SecretsNeverLeak mirrors TestSecretsNeverLeak for the exchanged
// kinds: the client secret and refresh tokens (the admin's and every rotated
// one) are in no response and no log, and stored only seal-wrapped; the
// access token is only in allowed resolve answers.
func TestOAuth2SecretsNeverLeak(t *testing.T) {
	te := newTokenEndpoint(t)
	te.set(func(te *tokenEndpoint) { te.rotate = true })
	clock := &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	e := newOAuth2Env(t, clock, &logical.InmemStorage{})
	e.writeOAuth2Route(t, "rt", authOAuth2RefreshToken, te.URL, nil)
	e.writeOAuth2Route(t, "cc", authOAuth2ClientCredentials, te.URL, nil)
	tok, mint := e.mint(t, "rt", nil)
	tok2, _ := e.mint(t, "cc", nil)
	var rotated, access []string
	for range 3 {
		for _, tk := range []string{tok, tok2} {
			d := e.resolve(t, tk, "GET", "/v1/x", "")
			wantAllowed(t, d)
			access = append(access, d["credential"].(string))
		}
		te.mu.Lock()
		rotated = append(rotated, te.validRT)
		te.mu.Unlock()
		clock.Advance(time.Hour)
	}
	wantDenied(t, e.resolve(t, tok, "DELETE", "/v1/x", ""), resolve.ReasonMethodNotAllowed)
	te.set(func(te *tokenEndpoint) { te.mode = "echo" })
	wantDenied(t, e.resolve(t, tok, "GET", "/v1/x", ""), resolve.ReasonCredentialExchange)
	e.ok(t, logical.ReadOperation, "routes/rt", nil)
	e.ok(t, logical.ReadOperation, "routes/cc", nil)
	e.ok(t, logical.ReadOperation, "tokens/"+mint.Data["accessor"].(string), nil)
	e.userError(t, logical.UpdateOperation, "routes/rt", map[string]any{"token_url": "https://x.example"}, "again")
	e.periodic(t)
	e.ok(t, logical.DeleteOperation, "routes/cc", nil)

	secrets := append([]string{testClientSecret, testRefreshToken}, rotated...)
	for _, r := range e.responses {
		raw, _ := json.Marshal(r.resp)
		s := string(raw)
		for _, secret := range secrets {
			if strings.Contains(s, secret) {
				t.Errorf("response of %s holds a secret (%.10s...)", r.path, secret)
			}
		}
		for _, at := range access {
			if strings.Contains(s, at) && !(r.path == "resolve" && r.resp.Data["allowed"] == true) {
				t.Errorf("response of %s holds an access token", r.path)
			}
		}
	}
	for _, secret := range append(secrets, access...) {
		if strings.Contains(e.log.String(), secret) {
			t.Errorf("the log holds %.10s...", secret)
		}
	}
	keys, err := logical.CollectKeys(context.Background(), e.storage)
	if err != nil {
		t.Fatal(err)
	}
	sealed := e.b.SpecialPaths().SealWrapStorage
	for _, k := range keys {
		entry, _ := e.storage.Get(context.Background(), k)
		for _, secret := range append(secrets, access...) {
			if strings.Contains(string(entry.Value), secret) && !strings.HasPrefix(k, sealed[0]) && !strings.HasPrefix(k, sealed[1]) {
				t.Errorf("storage entry %s, not seal-wrapped, holds %.10s...", k, secret)
			}
		}
	}
	if entry, _ := e.storage.Get(context.Background(), exchangePrefix+"cc"); entry != nil {
		t.Error("a deleted route's access token stays in storage")
	}
}
