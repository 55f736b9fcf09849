package plugin

import (
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/phantomvault/phantom/internal/token"
)

func TestMintIsALease(t *testing.T) {
	e := getTestBackend(t)
	e.ok(t, logical.UpdateOperation, "config", map[string]any{"proxy_url": "https://phantom.internal"})
	e.writeRoute(t, "stripe", nil)

	tok, resp := e.mint(t, "stripe", map[string]any{"metadata": map[string]any{"agent": "triage"}})
	if !strings.HasPrefix(tok, token.DefaultPrefix) || token.Check(tok) != nil {
		t.Fatalf("token %q", tok)
	}
	s := resp.Secret
	// Not renewable past its ttl: the mint asked for no more.
	if s == nil || !s.Renewable || s.TTL != DefaultTokenTTL || s.MaxTTL != DefaultTokenTTL {
		t.Fatalf("lease: %+v", s)
	}
	if s.InternalData["secret_type"] != secretTokenType {
		t.Fatalf("secret type %v", s.InternalData["secret_type"])
	}
	d := resp.Data
	if d["route"] != "stripe" || d["proxy_url"] != "https://phantom.internal" || !strings.HasPrefix(d["accessor"].(string), "pha_") {
		t.Fatalf("data: %v", d)
	}
	if d["expires_at"] != e.clock.Now().Add(DefaultTokenTTL).Format(time.RFC3339) || d["max_expires_at"] != d["expires_at"] {
		t.Fatalf("expires_at %v max_expires_at %v", d["expires_at"], d["max_expires_at"])
	}

	// GET with query parameters mints too, as `vault read phantom/token/x ttl=1h` does.
	r := e.ok(t, logical.ReadOperation, "token/stripe", map[string]any{"ttl": "1h"})
	if r.Secret.TTL != time.Hour {
		t.Fatalf("ttl %v", r.Secret.TTL)
	}
}

func TestMintTTLPrecedence(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "plain", nil)
	e.writeRoute(t, "short", map[string]any{"ttl": "30m", "max_ttl": "2h"})
	e.ok(t, logical.UpdateOperation, "config", map[string]any{"default_ttl": "3h"})

	for _, tc := range []struct {
		route, ttl  string
		want        time.Duration
		wantWarning bool
	}{
		{"plain", "", 3 * time.Hour, false},       // config default
		{"plain", "10m", 10 * time.Minute, false}, // request
		{"plain", "100h", 24 * time.Hour, true},   // capped by the engine's default max
		{"short", "", 30 * time.Minute, false},    // route default
		{"short", "90m", 90 * time.Minute, false}, // request within route max
		{"short", "5h", 2 * time.Hour, true},      // capped by route max
	} {
		data := map[string]any{}
		if tc.ttl != "" {
			data["ttl"] = tc.ttl
		}
		_, resp := e.mint(t, tc.route, data)
		if resp.Secret.TTL != tc.want || (len(resp.Warnings) > 0) != tc.wantWarning {
			t.Errorf("%s ttl=%q: got %v warnings=%v, want %v", tc.route, tc.ttl, resp.Secret.TTL, resp.Warnings, tc.want)
		}
	}
}

func TestMintNarrowsNeverWidens(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "r", map[string]any{"num_uses": 10, "bound_cidrs": "10.0.0.0/8"})

	_, resp := e.mint(t, "r", map[string]any{
		"allowed_paths":   "/v1/customers/cus_1,/v1/charges/ch_1",
		"allowed_methods": "get",
		"num_uses":        3,
		"bound_cidrs":     "10.1.0.0/16",
	})
	if got := resp.Data["allowed_methods"].([]string); len(got) != 1 || got[0] != "GET" {
		t.Fatalf("allowed_methods %v", got)
	}
	if resp.Data["num_uses"] != 3 {
		t.Fatalf("num_uses %v", resp.Data["num_uses"])
	}
	_, resp = e.mint(t, "r", nil)
	if resp.Data["num_uses"] != 10 {
		t.Fatalf("route default num_uses not applied: %v", resp.Data["num_uses"])
	}

	for _, tc := range []struct {
		data map[string]any
		want string
	}{
		{map[string]any{"allowed_paths": "/v1/**"}, "wider than the route"},
		{map[string]any{"allowed_paths": "/v1/charges/**"}, "wider than the route"},
		{map[string]any{"allowed_paths": "/v1/refunds"}, "wider than the route"},
		{map[string]any{"allowed_paths": "/v1/customers/../admin"}, "dot segment"},
		{map[string]any{"allowed_methods": "DELETE"}, "wider than the route"},
		{map[string]any{"allowed_methods": "TRACE"}, "never be allowed"},
		{map[string]any{"num_uses": 11}, "at most 10"},
		{map[string]any{"num_uses": 0}, "at most 10"},
		{map[string]any{"num_uses": -1}, "negative"},
		{map[string]any{"bound_cidrs": "0.0.0.0/0"}, "wider than the route"},
		{map[string]any{"bound_cidrs": "nonsense"}, "bound_cidrs"},
		{map[string]any{"ttl": "-5m"}, "ttl"},
		{map[string]any{"metadata": map[string]any{"k": strings.Repeat("v", 600)}}, "metadata"},
	} {
		e.userError(t, logical.UpdateOperation, "token/r", tc.data, tc.want)
	}

	if keys := e.listTokens(t, nil); len(keys) != 2 {
		t.Fatalf("refused mints left records: %v", keys)
	}
}

func TestMintUnknownRoute(t *testing.T) {
	e := getTestBackend(t)
	e.userError(t, logical.UpdateOperation, "token/nope", nil, `no route named "nope"`)
	e.userError(t, logical.ReadOperation, "token/nope", nil, `no route named "nope"`)
}

func TestMintUsesRouteTokenPrefix(t *testing.T) {
	e := getTestBackend(t)
	e.ok(t, logical.UpdateOperation, "config", map[string]any{"token_prefix": "acme_"})
	e.writeRoute(t, "openai", map[string]any{"token_prefix": "sk-proj-"})
	e.writeRoute(t, "other", nil)
	if tok, _ := e.mint(t, "openai", nil); !strings.HasPrefix(tok, "sk-proj-") {
		t.Fatalf("token %q", tok)
	}
	tok, _ := e.mint(t, "other", nil)
	if !strings.HasPrefix(tok, "acme_") {
		t.Fatalf("token %q", tok)
	}
	wantAllowed(t, e.resolve(t, tok, "GET", "/v1/customers", ""))
}

// A narrowing parameter that is present but names nothing must not mint the
// route's widest token (a CI script whose variable came out empty).
func TestMintRefusesEmptyNarrowing(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "r", map[string]any{"bound_cidrs": "10.0.0.0/8"})
	for _, op := range []logical.Operation{logical.UpdateOperation, logical.ReadOperation} {
		for _, tc := range []struct {
			field string
			value any
		}{
			{"allowed_paths", ""},
			{"allowed_paths", " , "},
			{"allowed_paths", []any{}},
			{"allowed_methods", ","},
			{"allowed_methods", " "},
			{"allowed_methods", ""},
			{"bound_cidrs", ""},
			{"bound_cidrs", ",,"},
		} {
			e.userError(t, op, "token/r", map[string]any{tc.field: tc.value}, tc.field+" was given but is empty")
		}
	}
	if keys := e.listTokens(t, nil); len(keys) != 0 {
		t.Fatalf("refused mints left records: %v", keys)
	}
	e.mint(t, "r", nil) // absent still means the route's
}

// TestMintFixesTheTokenLife: a token's whole life, renewals included, is its
// ttl unless the mint asks for more with max_ttl, never past the route's.
func TestMintFixesTheTokenLife(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "r", map[string]any{"max_ttl": "4h"})
	e.writeRoute(t, "short", map[string]any{"ttl": "1h"})
	e.writeRoute(t, "plain", nil)
	for _, tc := range []struct {
		route         string
		data          map[string]any
		ttl, life     time.Duration
		wantWarnings  int
		wantErrorText string
	}{
		{"r", map[string]any{"ttl": "30s"}, 30 * time.Second, 30 * time.Second, 0, ""},
		{"r", map[string]any{"ttl": "30m", "max_ttl": "2h"}, 30 * time.Minute, 2 * time.Hour, 0, ""},
		{"r", map[string]any{"ttl": "30m", "max_ttl": "10h"}, 30 * time.Minute, 4 * time.Hour, 1, ""},
		{"r", nil, 4 * time.Hour, 4 * time.Hour, 1, ""}, // default_ttl 24h capped by the route
		{"short", map[string]any{"max_ttl": "30m"}, 30 * time.Minute, 30 * time.Minute, 0, ""},
		{"plain", map[string]any{"max_ttl": "100h"}, 24 * time.Hour, DefaultTokenMaxTTL, 1, ""},
		{"r", map[string]any{"ttl": "2h", "max_ttl": "1h"}, 0, 0, 0, "must not exceed max_ttl"},
		{"r", map[string]any{"max_ttl": "-1h"}, 0, 0, 0, "max_ttl"},
	} {
		if tc.wantErrorText != "" {
			e.userError(t, logical.UpdateOperation, "token/"+tc.route, tc.data, tc.wantErrorText)
			continue
		}
		_, resp := e.mint(t, tc.route, tc.data)
		now := e.clock.Now()
		if resp.Secret.TTL != tc.ttl || resp.Secret.MaxTTL != tc.life || len(resp.Warnings) != tc.wantWarnings ||
			resp.Data["max_expires_at"] != now.Add(tc.life).Format(time.RFC3339) ||
			resp.Secret.InternalData[internalMaxExpiresAt] != now.Add(tc.life).Format(time.RFC3339Nano) {
			t.Errorf("%s %v: ttl=%v life=%v max_expires_at=%v warnings=%v; want ttl=%v life=%v",
				tc.route, tc.data, resp.Secret.TTL, resp.Secret.MaxTTL, resp.Data["max_expires_at"], resp.Warnings, tc.ttl, tc.life)
		}
	}

	// An operator who raises the engine's max_ttl still meets the mount's.
	e.ok(t, logical.UpdateOperation, "config", map[string]any{"max_ttl": "100h"})
	if _, resp := e.mint(t, "plain", map[string]any{"max_ttl": "100h"}); resp.Secret.MaxTTL != 48*time.Hour {
		t.Fatalf("life %v, want the test mount's 48h", resp.Secret.MaxTTL)
	}
}
