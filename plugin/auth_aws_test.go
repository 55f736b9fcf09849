package plugin

import (
	"encoding/hex"
	"fmt"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/phantomvault/phantom/internal/sigv4"
)

const testAWSSecret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"

func (e *testEnv) writeAWSRoute(t testing.TB, name string, extra map[string]any) {
	t.Helper()
	data := map[string]any{
		"upstream":          "https://s3.us-east-1.amazonaws.com",
		"allowed_paths":     "/bucket/**",
		"allowed_methods":   "GET,PUT,HEAD",
		"auth_type":         "aws_sigv4",
		"access_key_id":     "AKIAIOSFODNN7EXAMPLE",
		"secret_access_key": testAWSSecret,
		"region":            "us-east-1",
		"service":           "s3",
	}
	for k, v := range extra {
		data[k] = v
	}
	e.ok(t, logical.UpdateOperation, "routes/"+name, data)
}

// TestAWSRouteGrantsOnlyTheDaysSigningKey: the resolve answer carries the
// signing key of the engine's day, region and service, and neither it nor
// the secret is in any read.
func TestAWSRouteGrantsOnlyTheDaysSigningKey(t *testing.T) {
	e := getTestBackend(t)
	e.writeAWSRoute(t, "s3", map[string]any{"session_token": "FwoGZXIvYXdzEXAMPLE"})
	tok, _ := e.mint(t, "s3", nil)
	d := e.resolve(t, tok, "GET", "/bucket/key", "")
	wantAllowed(t, d)
	day := e.clock.Now().UTC().Format(sigv4.DateFormat)
	if want := hex.EncodeToString(sigv4.SigningKey(testAWSSecret, day, "us-east-1", "s3")); d["credential"] != want {
		t.Fatalf("credential %v, want the signing key of %s", d["credential"], day)
	}
	aws, _ := d["aws"].(map[string]any)
	if aws["access_key_id"] != "AKIAIOSFODNN7EXAMPLE" || aws["date"] != day || aws["service"] != "s3" || aws["session_token"] != "FwoGZXIvYXdzEXAMPLE" {
		t.Fatalf("aws = %v", aws)
	}
	if d["auth_type"] != "aws_sigv4" {
		t.Fatalf("auth_type %v", d["auth_type"])
	}

	read := e.ok(t, logical.ReadOperation, "routes/s3", nil).Data
	text := fmt.Sprint(read)
	for _, secret := range []string{testAWSSecret, "FwoGZXIvYXdzEXAMPLE", d["credential"].(string)} {
		if strings.Contains(text, secret) {
			t.Fatalf("the route's read shows a secret: %v", read)
		}
	}
	if read["secret_access_key_fingerprint"] != fingerprint(testAWSSecret) || read["access_key_id"] != "AKIAIOSFODNN7EXAMPLE" || read["service"] != "s3" {
		t.Fatalf("read = %v", read)
	}
	// The next day, the next day's key.
	e.clock.Advance(21 * 3600e9) // 00:04 the next day, the token still live
	d = e.resolve(t, tok, "GET", "/bucket/key", "")
	if d["aws"].(map[string]any)["date"] == day {
		t.Fatal("the signing key did not move to the next day")
	}
}

func TestAWSRouteSecretIsBoundToWhereItSigns(t *testing.T) {
	e := getTestBackend(t)
	e.writeAWSRoute(t, "s3", nil)
	for field, value := range map[string]any{
		"upstream": "https://attacker.example", "region": "eu-west-1", "service": "sts",
		"access_key_id": "AKIAOTHEROTHEROTHER", "session_token": "x", "headers": "X-Amz-Expected-Bucket-Owner=1",
	} {
		e.userError(t, logical.UpdateOperation, "routes/s3", map[string]any{field: value}, "send secret_access_key again")
	}
	// With the secret, each is accepted.
	e.ok(t, logical.UpdateOperation, "routes/s3", map[string]any{"region": "eu-west-1", "secret_access_key": testAWSSecret})
	// Narrowing actions needs no secret.
	e.ok(t, logical.UpdateOperation, "routes/s3", map[string]any{"allowed_actions": "s3:GetObject"})
}

func TestAWSRouteValidation(t *testing.T) {
	e := getTestBackend(t)
	base := map[string]any{"upstream": "https://s3.amazonaws.com", "allowed_paths": "/**", "allowed_methods": "GET", "auth_type": "aws_sigv4",
		"access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": testAWSSecret, "region": "us-east-1", "service": "s3"}
	with := func(k string, v any) map[string]any {
		d := map[string]any{}
		for key, val := range base {
			d[key] = val
		}
		if v == nil {
			delete(d, k)
		} else {
			d[k] = v
		}
		return d
	}
	for _, c := range []struct {
		field string
		value any
		want  string
	}{
		{"secret_access_key", nil, "secret_access_key is required"},
		{"region", nil, "needs access_key_id"},
		{"region", "US East", "region and service"},
		{"access_key_id", "short", "access_key_id must be"},
		{"credential", "sk-123", "secret_access_key, not credential"},
		{"allowed_actions", "sqs:SendMessage", "another service"},
		{"allowed_actions", "s3", "<service>:<operation>"},
		{"auth_format", "{{credential}}", "do not apply"},
		{"headers", "X-Amz-Date=1", "set by the signature"},
		{"secret_access_key", testAWSSecret + "\n", "line break"},
	} {
		e.userError(t, logical.UpdateOperation, "routes/bad", with(c.field, c.value), c.want)
	}
	// SigV4 fields on a pasted-key route are refused, not ignored.
	e.userError(t, logical.UpdateOperation, "routes/bearer", map[string]any{"upstream": "https://api.example.com",
		"allowed_paths": "/**", "allowed_methods": "GET", "credential": "sk", "allowed_actions": "s3:*"}, "applies only to auth_type=aws_sigv4")
}

func TestAWSAllowedActions(t *testing.T) {
	e := getTestBackend(t)
	e.writeAWSRoute(t, "s3", map[string]any{"allowed_actions": "s3:Get*,s3:ListObjectsV2,s3:HeadObject"})
	tok, resp := e.mint(t, "s3", nil)
	if got := fmt.Sprint(resp.Data["allowed_actions"]); got != "[s3:Get* s3:ListObjectsV2 s3:HeadObject]" {
		t.Errorf("mint shows allowed_actions %s", got)
	}
	resolve := func(tok, method, action string) map[string]any {
		return e.ok(t, logical.PatchOperation, "resolve", map[string]any{"token": tok, "method": method, "path": "/bucket/k", "action": action}).Data
	}
	wantAllowed(t, resolve(tok, "GET", "s3:GetObject"))
	wantDenied(t, resolve(tok, "PUT", "s3:PutObject"), "action_not_allowed")
	wantDenied(t, resolve(tok, "GET", ""), "action_not_allowed") // the proxy could not tell
	wantDenied(t, resolve(tok, "GET", "sqs:GetObject"), "action_not_allowed")
	wantAllowed(t, resolve(tok, "GET", "s3:GetObject,s3:GetObjectAcl"))
	wantDenied(t, resolve(tok, "GET", "s3:GetObject,s3:PutObjectAcl"), "action_not_allowed") // every one must be allowed
	wantDenied(t, resolve(tok, "GET", "s3:GetObject,"), "action_not_allowed")

	narrow, _ := e.mint(t, "s3", map[string]any{"allowed_actions": "s3:GetObject"})
	wantAllowed(t, resolve(narrow, "GET", "s3:GetObject"))
	wantDenied(t, resolve(narrow, "GET", "s3:GetObjectAcl"), "action_not_allowed")
	e.userError(t, logical.UpdateOperation, "token/s3", map[string]any{"allowed_actions": "s3:PutObject"}, "not within the route's allowed_actions")
	e.userError(t, logical.UpdateOperation, "token/s3", map[string]any{"allowed_actions": ""}, "allowed_actions")

	// In a batch too.
	d := e.ok(t, logical.PatchOperation, "resolve", map[string]any{"requests": []any{
		map[string]any{"token": narrow, "method": "GET", "path": "/bucket/k", "action": "s3:GetObject"},
		map[string]any{"token": narrow, "method": "PUT", "path": "/bucket/k", "action": "s3:PutObject"},
	}}).Data
	results := d["results"].([]map[string]any)
	if results[0]["allowed"] != true || results[1]["reason"] != "action_not_allowed" {
		t.Fatalf("batch: %v", results)
	}
	grant := d["routes"].(map[string]any)["s3"].(map[string]any)
	if grant["aws"] == nil || strings.Contains(fmt.Sprint(d), testAWSSecret) {
		t.Fatalf("batch grant %v", grant)
	}

	// A route with no allowed_actions lets a token narrow them.
	e.writeAWSRoute(t, "open", nil)
	open, _ := e.mint(t, "open", map[string]any{"allowed_actions": "s3:GetObject"})
	wantDenied(t, e.ok(t, logical.PatchOperation, "resolve", map[string]any{"token": open, "method": "PUT", "path": "/bucket/k", "action": "s3:PutObject"}).Data, "action_not_allowed")
	// Where S3's operations would be read wrong, no actions at all.
	e.userError(t, logical.UpdateOperation, "routes/vhost", map[string]any{"upstream": "https://reports.s3.us-east-1.amazonaws.com", "allowed_paths": "/**",
		"allowed_methods": "GET", "auth_type": "aws_sigv4", "access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": testAWSSecret,
		"region": "us-east-1", "service": "s3", "allowed_actions": "s3:GetObject"}, "path-style")
	e.writeAWSRoute(t, "based", map[string]any{"upstream": "https://s3.us-east-1.amazonaws.com/reports"})
	e.userError(t, logical.UpdateOperation, "token/based", map[string]any{"allowed_actions": "s3:GetObject"}, "path-style")
	// STS without allowed_actions is allowed, with a warning.
	resp = e.ok(t, logical.UpdateOperation, "routes/sts", map[string]any{"upstream": "https://sts.amazonaws.com", "allowed_paths": "/",
		"allowed_methods": "POST", "auth_type": "aws_sigv4", "access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": testAWSSecret,
		"region": "us-east-1", "service": "sts"})
	if len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "temporary credentials") {
		t.Errorf("warnings %v", resp.Warnings)
	}
	// A pasted-key route takes no actions at mint.
	e.writeRoute(t, "stripe", nil)
	e.userError(t, logical.UpdateOperation, "token/stripe", map[string]any{"allowed_actions": "s3:GetObject"}, "only to aws_sigv4")
}
