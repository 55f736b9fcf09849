package plugin

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/phantomvault/phantom/internal/resolve"
)

const (
	hmacSecret = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
	hmacKeyID  = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
	// A Coinbase-style secret: base64 of 64 random bytes.
	hmacSecretB64 = "aGVsbG8gd29ybGQgdGhpcyBpcyBhIHRlc3Qgc2VjcmV0IGZvciBjb2luYmFzZSBzdHlsZSBobWFjIQ=="
	hmacPass      = "p4ssphr4se-xyz"
)

func binanceRoute() map[string]any {
	return map[string]any{
		"auth_type": "hmac", "credential": hmacSecret,
		"hmac_message": "{query}{body}", "hmac_signature_query": "signature",
		"hmac_timestamp_query": "timestamp", "hmac_timestamp_format": "unix_ms",
		"hmac_key_id": hmacKeyID, "hmac_key_id_header": "X-MBX-APIKEY",
	}
}

func coinbaseRoute() map[string]any {
	return map[string]any{
		"auth_type": "hmac", "credential": hmacSecretB64, "upstream": "https://api.example.com/base",
		"hmac_message": "{timestamp}{method}{path_query}{body}", "hmac_encoding": "base64", "hmac_secret_encoding": "base64",
		"hmac_signature_header": "CB-ACCESS-SIGN", "hmac_timestamp_header": "CB-ACCESS-TIMESTAMP",
		"hmac_key_id": hmacKeyID, "hmac_key_id_header": "CB-ACCESS-KEY",
		"hmac_passphrase": hmacPass, "hmac_passphrase_header": "CB-ACCESS-PASSPHRASE",
	}
}

func (e *testEnv) resolveHMAC(t *testing.T, tok, method, path string, in map[string]any) map[string]any {
	t.Helper()
	data := map[string]any{"token": tok, "method": method, "path": path}
	if in != nil {
		data["hmac"] = in
	}
	return e.ok(t, logical.PatchOperation, "resolve", data).Data
}

func sign(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

func TestHMACBinanceStyle(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "bn", binanceRoute())
	tok, _ := e.mint(t, "bn", map[string]any{"num_uses": 2})

	// Without inputs: what to send, and no use spent.
	d := e.resolveHMAC(t, tok, "POST", "/v1/customers/order", nil)
	wantDenied(t, d, resolve.ReasonHMACInputs)
	if needs := d["hmac_needs"].(map[string]any); needs["body"] != resolve.HMACBodyRaw || needs["max_body"] != int64(defaultHMACMaxBody) {
		t.Fatalf("hmac_needs = %v", needs)
	}

	body := "symbol=BTCUSDT&side=BUY&quantity=1"
	// The agent's own timestamp and signature parameters are dropped.
	d = e.resolveHMAC(t, tok, "POST", "/v1/customers/order", map[string]any{
		"query": "recvWindow=5000&timestamp=1&signature=forged", "body": base64.StdEncoding.EncodeToString([]byte(body)),
	})
	wantAllowed(t, d)
	if _, ok := d["credential"]; ok && d["credential"] != "" {
		t.Fatal("an hmac answer carries the credential")
	}
	sig := d["hmac_signature"].(map[string]any)
	ts := strconv.FormatInt(e.clock.Now().UnixMilli(), 10)
	if sig["timestamp"] != ts {
		t.Fatalf("timestamp %v, want %s", sig["timestamp"], ts)
	}
	want := hex.EncodeToString(sign([]byte(hmacSecret), "recvWindow=5000&timestamp="+ts+body))
	if sig["signature"] != want {
		t.Fatalf("signature %v, want %s", sig["signature"], want)
	}
	g := d["hmac"].(map[string]any)
	if g["key_id"] != hmacKeyID || g["key_id_header"] != "X-MBX-APIKEY" || g["signature_query"] != "signature" || g["timestamp_query"] != "timestamp" {
		t.Fatalf("hmac grant = %v", g)
	}
	if d["uses_remaining"] != 1 {
		t.Fatalf("uses_remaining = %v: the inputs round must not spend a use", d["uses_remaining"])
	}
}

func TestHMACCoinbaseStyle(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "cb", coinbaseRoute())
	tok, _ := e.mint(t, "cb", nil)
	body := `{"size":"0.01","side":"buy"}`
	d := e.resolveHMAC(t, tok, "POST", "/v1/charges/orders", map[string]any{"query": "a=1", "body": base64.StdEncoding.EncodeToString([]byte(body))})
	wantAllowed(t, d)
	sig := d["hmac_signature"].(map[string]any)
	ts := strconv.FormatInt(e.clock.Now().Unix(), 10)
	key, _ := base64.StdEncoding.DecodeString(hmacSecretB64)
	// The upstream's base path is part of what it sees, so of what is signed.
	want := base64.StdEncoding.EncodeToString(sign(key, ts+"POST/base/v1/charges/orders?a=1"+body))
	if sig["timestamp"] != ts || sig["signature"] != want {
		t.Fatalf("signature %v, want %s at %s", sig, want, ts)
	}
	g := d["hmac"].(map[string]any)
	if g["passphrase"] != hmacPass || g["passphrase_header"] != "CB-ACCESS-PASSPHRASE" || g["signature_header"] != "CB-ACCESS-SIGN" {
		t.Fatalf("hmac grant = %v", g)
	}
}

// TestHMACSignsOnlyWhatWasAuthorized: the method and path signed are the
// ones resolve authorized; a token out of scope gets no signature at all.
func TestHMACSignsOnlyWhatWasAuthorized(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "cb", coinbaseRoute())
	tok, _ := e.mint(t, "cb", map[string]any{"allowed_paths": "/v1/charges/*", "allowed_methods": "GET"})
	in := map[string]any{"query": "", "body": ""}
	wantDenied(t, e.resolveHMAC(t, tok, "GET", "/v1/customers/x", in), resolve.ReasonPathNotAllowed)
	wantDenied(t, e.resolveHMAC(t, tok, "POST", "/v1/charges/x", in), resolve.ReasonMethodNotAllowed)
	wantDenied(t, e.resolveHMAC(t, tok, "GET", "/v1/customers/x", nil), resolve.ReasonPathNotAllowed)
	d := e.resolveHMAC(t, tok, "GET", "/v1/charges/x", in)
	wantAllowed(t, d)
	key, _ := base64.StdEncoding.DecodeString(hmacSecretB64)
	ts := d["hmac_signature"].(map[string]any)["timestamp"].(string)
	if got, want := d["hmac_signature"].(map[string]any)["signature"], base64.StdEncoding.EncodeToString(sign(key, ts+"GET/base/v1/charges/x")); got != want {
		t.Fatalf("signature %v, want %v", got, want)
	}
}

func TestHMACBodySHA256AndBatch(t *testing.T) {
	e := getTestBackend(t)
	route := binanceRoute()
	route["hmac_message"] = `{method}\n{path}\n{body_sha256}`
	e.writeRoute(t, "h", route)
	tok, _ := e.mint(t, "h", nil)
	d := e.resolveHMAC(t, tok, "GET", "/v1/charges/a", nil)
	if needs := d["hmac_needs"].(map[string]any); needs["body"] != resolve.HMACBodySHA256 {
		t.Fatalf("hmac_needs = %v", needs)
	}
	sum := sha256.Sum256([]byte("hello"))
	hash := hex.EncodeToString(sum[:])
	wantDenied(t, e.resolveHMAC(t, tok, "GET", "/v1/charges/a", map[string]any{"body_sha256": "xyz"}), resolve.ReasonBadRequest)

	// A batch carries each request's inputs and answers each its own signature.
	var reqs []any
	for _, p := range []string{"/v1/charges/a", "/v1/charges/b"} {
		reqs = append(reqs, map[string]any{"token": tok, "method": "GET", "path": p, "hmac": map[string]any{"query": "", "body_sha256": hash}})
	}
	reqs = append(reqs, map[string]any{"token": tok, "method": "GET", "path": "/v1/charges/c", "hmac": "nope"})
	out := e.ok(t, logical.PatchOperation, "resolve", map[string]any{"requests": reqs}).Data
	results := out["results"].([]map[string]any)
	for i, p := range []string{"/v1/charges/a", "/v1/charges/b"} {
		wantAllowed(t, results[i])
		want := hex.EncodeToString(sign([]byte(hmacSecret), "GET\n"+p+"\n"+hash))
		if got := results[i]["hmac_signature"].(map[string]any)["signature"]; got != want {
			t.Errorf("%s: signature %v, want %v", p, got, want)
		}
	}
	wantDenied(t, results[2], resolve.ReasonBadRequest)
	if g := out["routes"].(map[string]any)["h"].(map[string]any); g["credential"] != "" || g["hmac"] == nil {
		t.Errorf("batch grant = %v", g)
	}
}

func TestHMACRouteValidation(t *testing.T) {
	e := getTestBackend(t)
	base := func(edit map[string]any) map[string]any {
		d := binanceRoute()
		d["upstream"], d["allowed_paths"], d["allowed_methods"] = "https://api.example.com", "/**", "GET"
		for k, v := range edit {
			d[k] = v
		}
		return d
	}
	for _, tc := range []struct {
		edit map[string]any
		want string
	}{
		{map[string]any{"hmac_message": "{query}{nonce}"}, "unknown placeholder {nonce}"},
		{map[string]any{"hmac_message": `{query}\t`}, `\t is not an escape`},
		{map[string]any{"hmac_message": "{query"}, "is not closed"},
		{map[string]any{"hmac_message": ""}, "hmac_message: is required"},
		{map[string]any{"hmac_signature_header": "X-Sig"}, "exactly one of"},
		{map[string]any{"hmac_hash": "md5"}, "hmac_hash must be one of"},
		{map[string]any{"hmac_timestamp_format": "iso"}, "hmac_timestamp_format must be one of"},
		{map[string]any{"hmac_secret_encoding": "base64", "credential": "not_base64_secret"}, "credential is not base64"},
		{map[string]any{"hmac_key_id": "short"}, "at least 8"},
		{map[string]any{"hmac_key_id_header": ""}, "hmac_key_id needs hmac_key_id_header"},
		{map[string]any{"hmac_max_body": 2 << 20}, "hmac_max_body must be between"},
		{map[string]any{"headers": map[string]any{"x-mbx-apikey": "v"}}, "is where hmac_key_id_header puts its value"},
		{map[string]any{"auth_format": "{{credential}}"}, "do not apply"},
		{map[string]any{"usage_format": "openai"}, "cannot take usage_format"},
	} {
		e.userError(t, logical.UpdateOperation, "routes/v", base(tc.edit), tc.want)
	}
	e.userError(t, logical.UpdateOperation, "routes/v2", map[string]any{
		"upstream": "https://a.example", "allowed_paths": "/**", "allowed_methods": "GET", "credential": "k", "hmac_message": "{body}",
	}, "applies only to auth_type=hmac")
	resp := e.ok(t, logical.UpdateOperation, "routes/v3", base(map[string]any{"hmac_message": "{body}", "hmac_timestamp_query": ""}))
	if len(resp.Warnings) == 0 || !strings.Contains(resp.Warnings[0], "covers no timestamp") {
		t.Errorf("warnings = %v", resp.Warnings)
	}
}

// TestHMACReadAndRebind: reads show fingerprints, never the secret, key id
// or passphrase; a write that changes what is signed or where it goes must
// carry them again.
func TestHMACReadAndRebind(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "cb", coinbaseRoute())
	d := e.ok(t, logical.ReadOperation, "routes/cb", nil).Data
	text := fmt.Sprint(d)
	for _, secret := range []string{hmacSecretB64, hmacKeyID, hmacPass} {
		if strings.Contains(text, secret) {
			t.Fatalf("a read shows a secret: %v", text)
		}
	}
	if d["auth_type"] != "hmac" || d["hmac_message"] != "{timestamp}{method}{path_query}{body}" ||
		d["hmac_key_id_fingerprint"] != fingerprint(hmacKeyID) || d["hmac_passphrase_fingerprint"] != fingerprint(hmacPass) {
		t.Fatalf("read = %v", d)
	}
	for field, value := range map[string]any{
		"hmac_message": "{body}", "hmac_signature_header": "X-Sig", "hmac_hash": "sha512", "hmac_secret_encoding": "raw",
		"hmac_timestamp_header": "X-TS", "hmac_key_id_header": "X-Key",
	} {
		e.userError(t, logical.UpdateOperation, "routes/cb", map[string]any{field: value}, field)
	}
	e.userError(t, logical.UpdateOperation, "routes/cb", map[string]any{"upstream": "https://evil.example", "credential": hmacSecretB64}, "send hmac_key_id and hmac_passphrase again")
	e.ok(t, logical.UpdateOperation, "routes/cb", map[string]any{"upstream": "https://new.example", "credential": hmacSecretB64, "hmac_key_id": hmacKeyID, "hmac_passphrase": hmacPass})
	e.ok(t, logical.UpdateOperation, "routes/cb", map[string]any{"hmac_max_body": 1024, "allowed_methods": "GET"})
	// Leaving hmac drops its settings.
	e.ok(t, logical.UpdateOperation, "routes/cb", map[string]any{"auth_type": "bearer", "credential": "k"})
	if d := e.ok(t, logical.ReadOperation, "routes/cb", nil).Data; d["hmac_message"] != nil {
		t.Fatalf("bearer route still shows hmac settings: %v", d)
	}
}
