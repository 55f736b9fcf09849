package plugin

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

func TestGoogleServiceAccountRouteFields(t *testing.T) {
	g := newGoogleStandIn(t)
	e := newOAuth2Env(t, &fakeClock{now: time.Now()}, &logical.InmemStorage{})
	with := func(k string, v any) map[string]any {
		m := googleRoute(g.URL)
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		return m
	}
	key := func(fields map[string]any) string { return testGoogleKeyJSON(g.URL, fields) }
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecDER, _ := x509.MarshalPKCS8PrivateKey(ec)
	ecPEM := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER}))
	garbled := strings.Replace(testGoogleKeyPEM(), "\n", "\nAAAA", 3)
	for _, c := range []struct {
		field string
		value any
		want  string
	}{
		{"service_account_key", nil, "needs service_account_key and scopes"},
		{"scopes", nil, "needs service_account_key and scopes"},
		{"service_account_key", "-----BEGIN PRIVATE KEY-----", "not a JSON key file"},
		{"service_account_key", key(map[string]any{"type": "authorized_user"}), `type must be "service_account"`},
		{"service_account_key", key(map[string]any{"private_key_id": nil}), "needs client_email, private_key and private_key_id"},
		{"service_account_key", key(map[string]any{"client_email": "nobody"}), "client_email is not an email address"},
		{"service_account_key", key(map[string]any{"private_key": garbled}), "its private_key is not a readable RSA private key"},
		{"service_account_key", key(map[string]any{"private_key": ecPEM}), "private_key must be an RSA key"},
		{"service_account_key", key(map[string]any{"token_uri": "http://oauth2.example.com/token"}), "token_uri: http would send"},
		{"service_account_key", key(map[string]any{"token_uri": "https://u:p@oauth2.example.com/token"}), "token_uri: must not carry user info"},
		{"service_account_key", strings.Replace(key(nil), "{", `{"Token_URI":"http://127.0.0.1:1/token",`, 1), "names a field twice"},
		{"scopes", `read,"write"`, "not a scope token"},
		{"subject", "an admin@example.com", "subject must be an email address"},
		{"credential", "x", "not credential"},
		{"client_secret", "x", "applies only to auth_type=oauth2"},
		{"auth_header", "X-Key", "do not apply"},
	} {
		e.userError(t, logical.UpdateOperation, "routes/bad", with(c.field, c.value), c.want)
	}
	bearer := map[string]any{"upstream": "https://api.example.com", "allowed_paths": "/v1/**", "allowed_methods": "GET", "credential": testCredential}
	for field, want := range map[string]string{"subject": "applies only to auth_type=google_service_account", "scopes": "or google_service_account"} {
		m := map[string]any{field: "x"}
		for k, v := range bearer {
			m[k] = v
		}
		e.userError(t, logical.UpdateOperation, "routes/bad", m, want)
	}

	// Without token_uri, the key's tokens come from Google's endpoint.
	e.ok(t, logical.UpdateOperation, "routes/gcp", with("service_account_key", key(map[string]any{"token_uri": nil})))
	if read := e.ok(t, logical.ReadOperation, "routes/gcp", nil).Data; read["token_uri"] != defaultGoogleTokenURI {
		t.Fatalf("token_uri by default: %v", read["token_uri"])
	}
	e.ok(t, logical.UpdateOperation, "routes/gcp", with("subject", "admin@example.com"))
	read := e.ok(t, logical.ReadOperation, "routes/gcp", nil).Data
	if read["service_account_key_fingerprint"] != fingerprint(key(nil)) || read["client_email"] != testGoogleEmail ||
		read["token_uri"] != g.URL || read["subject"] != "admin@example.com" ||
		fmt.Sprint(read["scopes"]) != "["+testGoogleScope+" https://www.googleapis.com/auth/drive.readonly]" {
		t.Fatalf("read = %v", read)
	}
	if _, ok := read["credential_fingerprint"]; ok {
		t.Fatalf("read shows a credential fingerprint: %v", read)
	}

	// The key is bound to where its JWTs go and what its tokens may do.
	for field, value := range map[string]any{
		"upstream": "https://attacker.example", "scopes": "https://www.googleapis.com/auth/cloud-platform",
		"subject": "ceo@example.com", "headers": "X-Goog-User-Project=other", "allow_http": true,
	} {
		e.userError(t, logical.UpdateOperation, "routes/gcp", map[string]any{field: value}, "send service_account_key again")
	}
	e.ok(t, logical.UpdateOperation, "routes/gcp", map[string]any{"subject": "", "service_account_key": key(nil)})
	e.ok(t, logical.UpdateOperation, "routes/gcp", map[string]any{"allowed_methods": "GET,POST"})
	// Another account's key, or another endpoint's, comes only with the key.
	e.ok(t, logical.UpdateOperation, "routes/gcp", map[string]any{"service_account_key": key(map[string]any{"client_email": "other@p.iam.gserviceaccount.com"})})
	if read := e.ok(t, logical.ReadOperation, "routes/gcp", nil).Data; read["client_email"] != "other@p.iam.gserviceaccount.com" {
		t.Fatalf("client_email after a new key: %v", read["client_email"])
	}
	// Away to a pasted kind and back: the Google settings start afresh.
	e.ok(t, logical.UpdateOperation, "routes/gcp", map[string]any{"auth_type": "bearer", "credential": testCredential})
	e.userError(t, logical.UpdateOperation, "routes/gcp", map[string]any{"auth_type": authGoogleServiceAccount, "scopes": testGoogleScope}, "needs service_account_key and scopes")
	e.userError(t, logical.UpdateOperation, "routes/gcp", map[string]any{"auth_type": authGoogleServiceAccount, "service_account_key": key(nil)}, "needs service_account_key and scopes")

	// No response, error or not, holds the key in any form.
	secrets := []string{testGoogleKeyPEM(), strings.Split(testGoogleKeyPEM(), "\n")[1], "PRIVATE KEY", testGoogleKID}
	for _, r := range e.responses {
		raw, _ := json.Marshal(r.resp)
		for _, s := range secrets {
			if strings.Contains(string(raw), s) || strings.Contains(string(raw), strings.ReplaceAll(s, "\n", `\n`)) {
				t.Errorf("a response of %s holds the key (%.12s...)", r.path, s)
			}
		}
	}
}
