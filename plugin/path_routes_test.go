package plugin

import (
	"fmt"
	"maps"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
)

func TestRouteLifecycle(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "stripe", map[string]any{
		"headers":     map[string]any{"Stripe-Version": "2024-06-20"},
		"ttl":         "1h",
		"max_ttl":     "4h",
		"num_uses":    3,
		"bound_cidrs": "10.0.0.0/8,192.0.2.7",
	})

	d := e.ok(t, logical.ReadOperation, "routes/stripe", nil).Data
	checks := map[string]any{
		"upstream": "https://api.example.com", "auth_type": "bearer", "ttl": int64(3600), "max_ttl": int64(14400),
		"num_uses": 3, "credential_fingerprint": fingerprint(testCredential),
	}
	for k, want := range checks {
		if d[k] != want {
			t.Errorf("%s = %v, want %v", k, d[k], want)
		}
	}
	if _, ok := d["credential"]; ok {
		t.Fatal("read returns the credential")
	}
	if got := d["bound_cidrs"].([]string); len(got) != 2 || got[1] != "192.0.2.7/32" {
		t.Errorf("bound_cidrs = %v", got)
	}
	if got := d["allowed_methods"].([]string); strings.Join(got, ",") != "GET,POST" {
		t.Errorf("allowed_methods = %v", got)
	}
	if !strings.HasPrefix(fingerprint(testCredential), "sha256:") || len(fingerprint(testCredential)) != len("sha256:")+12 {
		t.Errorf("fingerprint %q", fingerprint(testCredential))
	}

	// A partial update keeps the credential and other fields.
	e.ok(t, logical.UpdateOperation, "routes/stripe", map[string]any{"allowed_methods": "get"})
	d = e.ok(t, logical.ReadOperation, "routes/stripe", nil).Data
	if d["credential_fingerprint"] != fingerprint(testCredential) || d["upstream"] != "https://api.example.com" {
		t.Fatalf("partial update lost fields: %v", d)
	}

	keys := e.ok(t, logical.ListOperation, "routes/", nil).Data["keys"].([]string)
	if len(keys) != 1 || keys[0] != "stripe" {
		t.Fatalf("list = %v", keys)
	}
	e.ok(t, logical.DeleteOperation, "routes/stripe", nil)
	if resp, err := e.request(t, logical.ReadOperation, "routes/stripe", nil); err != nil || resp != nil {
		t.Fatalf("read after delete: %v %v", resp, err)
	}
}

func TestRouteExistenceCheckSeparatesCreateFromUpdate(t *testing.T) {
	e := getTestBackend(t)
	_, exists, err := e.b.HandleExistenceCheck(t.Context(), &logical.Request{Operation: logical.CreateOperation, Path: "routes/a", Storage: e.storage})
	if err != nil || exists {
		t.Fatalf("before create: exists=%v err=%v", exists, err)
	}
	e.writeRoute(t, "a", nil)
	_, exists, err = e.b.HandleExistenceCheck(t.Context(), &logical.Request{Operation: logical.CreateOperation, Path: "routes/a", Storage: e.storage})
	if err != nil || !exists {
		t.Fatalf("after create: exists=%v err=%v", exists, err)
	}
}

func TestRouteValidation(t *testing.T) {
	base := func(extra map[string]any) map[string]any {
		d := map[string]any{
			"upstream": "https://api.example.com", "allowed_paths": "/v1/**", "allowed_methods": "GET", "credential": testCredential,
		}
		for k, v := range extra {
			if v == nil {
				delete(d, k)
			} else {
				d[k] = v
			}
		}
		return d
	}
	tests := []struct {
		name  string
		extra map[string]any
		want  string
	}{
		{"no upstream", map[string]any{"upstream": nil}, "upstream is required"},
		{"relative upstream", map[string]any{"upstream": "api.example.com"}, "upstream"},
		{"ftp upstream", map[string]any{"upstream": "ftp://api.example.com"}, "scheme"},
		{"plain http", map[string]any{"upstream": "http://api.example.com"}, "allow_http"},
		{"userinfo", map[string]any{"upstream": "https://u:p@api.example.com"}, "user info"},
		{"query", map[string]any{"upstream": "https://api.example.com/?a=b"}, "query"},
		{"fragment", map[string]any{"upstream": "https://api.example.com/#x"}, "fragment"},
		{"dotted base path", map[string]any{"upstream": "https://api.example.com/a/../b"}, "dot segment"},
		{"no paths", map[string]any{"allowed_paths": nil}, "allowed_paths is required"},
		{"relative path", map[string]any{"allowed_paths": "v1/x"}, "must start with /"},
		{"partial glob", map[string]any{"allowed_paths": "/v1/cus_*"}, "whole segments"},
		{"inner **", map[string]any{"allowed_paths": "/v1/**/x"}, "last segment"},
		{"no methods", map[string]any{"allowed_methods": nil}, "allowed_methods is required"},
		{"TRACE", map[string]any{"allowed_methods": "GET,TRACE"}, "never be allowed"},
		{"CONNECT", map[string]any{"allowed_methods": "CONNECT"}, "never be allowed"},
		{"no credential", map[string]any{"credential": nil}, "credential is required"},
		{"newline credential", map[string]any{"credential": testCredential + "\n"}, "line break"},
		{"NUL credential", map[string]any{"credential": "ab\x00cd"}, "control character"},
		{"spaced credential", map[string]any{"credential": " " + testCredential}, "white space"},
		{"unknown auth_type", map[string]any{"auth_type": "cookie"}, "auth_type"},
		{"header without name", map[string]any{"auth_type": "header"}, "auth_header"},
		{"header bad name", map[string]any{"auth_type": "header", "auth_header": "x api key"}, "not a valid header name"},
		{"header reserved", map[string]any{"auth_type": "header", "auth_header": "Host"}, "connection-level"},
		{"query without param", map[string]any{"auth_type": "query"}, "auth_query_param"},
		{"query bad param", map[string]any{"auth_type": "query", "auth_query_param": "a&b"}, "auth_query_param"},
		{"format without placeholder", map[string]any{"auth_type": "header", "auth_header": "x-key", "auth_format": "Token"}, "{{credential}}"},
		{"bearer with format", map[string]any{"auth_format": "Token {{credential}}"}, "auth_type=header"},
		{"header CRLF value", map[string]any{"headers": map[string]any{"X-A": "a\r\nb"}}, "control character"},
		{"header over auth", map[string]any{"headers": map[string]any{"authorization": "x"}}, "credential is injected"},
		{"hop-by-hop header", map[string]any{"headers": map[string]any{"Connection": "close"}}, "connection-level"},
		{"ttl over max", map[string]any{"ttl": "2h", "max_ttl": "1h"}, "must not exceed"},
		{"negative uses", map[string]any{"num_uses": -1}, "negative"},
		{"bad cidr", map[string]any{"bound_cidrs": "10.0.0.0/33"}, "bound_cidrs"},
		{"bad prefix", map[string]any{"token_prefix": "sk live"}, "token_prefix"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := getTestBackend(t)
			e.userError(t, logical.CreateOperation, "routes/r", base(tt.extra), tt.want)
			if resp, _ := e.request(t, logical.ReadOperation, "routes/r", nil); resp != nil {
				t.Fatal("an invalid route was stored")
			}
		})
	}

	t.Run("a failed update keeps the old route", func(t *testing.T) {
		e := getTestBackend(t)
		e.ok(t, logical.CreateOperation, "routes/r", base(nil))
		e.userError(t, logical.UpdateOperation, "routes/r", map[string]any{"upstream": "http://api.example.com"}, "allow_http")
		if d := e.ok(t, logical.ReadOperation, "routes/r", nil).Data; d["upstream"] != "https://api.example.com" {
			t.Fatalf("upstream changed to %v", d["upstream"])
		}
	})

	t.Run("accepted forms", func(t *testing.T) {
		e := getTestBackend(t)
		for name, extra := range map[string]map[string]any{
			"loopback http":   {"upstream": "http://127.0.0.1:8080"},
			"localhost http":  {"upstream": "http://localhost:8080/"},
			"ipv6 loopback":   {"upstream": "http://[::1]:9000"},
			"base path":       {"upstream": "https://example.com/openai/v1"},
			"header type":     {"auth_type": "header", "auth_header": "x-api-key"},
			"header format":   {"auth_type": "header", "auth_header": "Authorization", "auth_format": "Token {{credential}}"},
			"basic":           {"auth_type": "basic"},
			"basic with user": {"auth_type": "basic", "auth_format": "AC123:{{credential}}"},
			"query":           {"auth_type": "query", "auth_query_param": "key"},
		} {
			e.ok(t, logical.CreateOperation, "routes/"+strings.ReplaceAll(name, " ", "-"), base(extra))
		}
		resp := e.ok(t, logical.CreateOperation, "routes/remote-http", base(map[string]any{"upstream": "http://api.example.com", "allow_http": true}))
		if len(resp.Warnings) == 0 {
			t.Fatal("no warning for a clear-text upstream")
		}
		if d := e.ok(t, logical.ReadOperation, "routes/localhost-http", nil).Data; d["upstream"] != "http://localhost:8080" {
			t.Fatalf("trailing slash kept: %v", d["upstream"])
		}
	})
}

func TestRouteAuthTypeChangeDropsStaleSettings(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "r", map[string]any{"auth_type": "header", "auth_header": "x-api-key", "auth_format": "Key {{credential}}"})
	e.ok(t, logical.UpdateOperation, "routes/r", map[string]any{"auth_type": "query", "auth_query_param": "key", "credential": testCredential})
	d := e.ok(t, logical.ReadOperation, "routes/r", nil).Data
	if d["auth_header"] != "" || d["auth_format"] != "" || d["auth_query_param"] != "key" {
		t.Fatalf("stale settings: %v", d)
	}
}

// TestRouteUpdateCannotMoveTheCredential: whoever may update a route but does
// not know its credential (the phantom-admin policy) cannot change where or
// how the key is sent; with the credential in the same write, they can.
func TestRouteUpdateCannotMoveTheCredential(t *testing.T) {
	const attacker = "https://collector.attacker.example"
	moves := map[string]map[string]any{
		"origin":            {"upstream": attacker},
		"port":              {"upstream": "https://api.example.com:8443"},
		"scheme":            {"upstream": "http://api.example.com", "allow_http": true},
		"path prefix":       {"upstream": "https://api.example.com/tenant-b"},
		"allow_http on":     {"allow_http": true},
		"auth_type":         {"auth_type": "query", "auth_query_param": "key"},
		"auth_header":       {"auth_type": "header", "auth_header": "x-api-key"},
		"basic format":      {"auth_type": "basic", "auth_format": "user:{{credential}}"},
		"static header":     {"headers": map[string]any{"x-apigw-api-id": "attacker-api"}},
		"headers removed":   {"headers": map[string]any{}},
		"header value":      {"headers": map[string]any{"Stripe-Version": "2099-01-01"}},
		"upstream, headers": {"upstream": attacker, "headers": map[string]any{"X-A": "b"}},
	}
	for name, update := range moves {
		t.Run(name, func(t *testing.T) {
			e := getTestBackend(t)
			e.writeRoute(t, "r", map[string]any{"headers": map[string]any{"Stripe-Version": "2024-06-20"}})
			tok, _ := e.mint(t, "r", nil)
			before := e.ok(t, logical.ReadOperation, "routes/r", nil).Data

			for field := range update {
				if field == "auth_query_param" || field == "auth_header" || field == "auth_format" {
					continue // named with auth_type, which changes first
				}
				e.userError(t, logical.UpdateOperation, "routes/r", update, field)
			}
			e.userError(t, logical.UpdateOperation, "routes/r", update, "send credential again")
			after := e.ok(t, logical.ReadOperation, "routes/r", nil).Data
			for k, v := range before {
				if fmt.Sprint(after[k]) != fmt.Sprint(v) {
					t.Fatalf("a refused update changed %s: %v -> %v", k, v, after[k])
				}
			}
			if d := e.resolve(t, tok, "GET", "/v1/customers", ""); d["upstream"] != "https://api.example.com" {
				t.Fatalf("the key would go to %v", d["upstream"])
			}

			// Knowing the key, the same update is fine.
			withKey := maps.Clone(update)
			withKey["credential"] = testCredential
			e.ok(t, logical.UpdateOperation, "routes/r", withKey)
		})
	}

	t.Run("scope and no-op updates need no credential", func(t *testing.T) {
		e := getTestBackend(t)
		e.writeRoute(t, "r", map[string]any{"headers": map[string]any{"Stripe-Version": "2024-06-20"}, "allow_http": true})
		for _, update := range []map[string]any{
			{"allowed_paths": "/v1/customers/**", "allowed_methods": "GET"},
			{"ttl": "1h", "max_ttl": "2h", "num_uses": 5, "bound_cidrs": "10.0.0.0/8", "token_prefix": "sk_"},
			{"upstream": "https://api.example.com/", "auth_type": "bearer"}, // the same, as stored
			{"headers": map[string]any{"Stripe-Version": "2024-06-20"}},
			{"allow_http": false}, // only narrows
		} {
			e.ok(t, logical.UpdateOperation, "routes/r", update)
		}
	})
}

func TestRouteWarnsAboveTheEngineMax(t *testing.T) {
	e := getTestBackend(t)
	resp := e.ok(t, logical.CreateOperation, "routes/r", map[string]any{
		"upstream": "https://api.example.com", "allowed_paths": "/v1/**", "allowed_methods": "GET", "credential": testCredential,
		"max_ttl": "30h",
	})
	if len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "capped at the engine's max_ttl of 24h") {
		t.Fatalf("warnings %v", resp.Warnings)
	}
}
