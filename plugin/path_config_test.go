package plugin

import (
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

func TestConfig(t *testing.T) {
	e := getTestBackend(t)

	d := e.ok(t, logical.ReadOperation, "config", nil).Data
	if d["default_ttl"] != int64(86400) || d["token_prefix"] != "phm_" || d["proxy_url"] != "" || d["max_ttl"] != int64(DefaultTokenMaxTTL/time.Second) {
		t.Fatalf("defaults: %v", d)
	}

	e.ok(t, logical.UpdateOperation, "config", map[string]any{"proxy_url": "https://phantom.internal:8443", "default_ttl": "2h", "max_ttl": "12h"})
	e.ok(t, logical.UpdateOperation, "config", map[string]any{"token_prefix": "sk-"}) // partial update keeps the rest
	d = e.ok(t, logical.ReadOperation, "config", nil).Data
	if d["proxy_url"] != "https://phantom.internal:8443" || d["default_ttl"] != int64(7200) || d["max_ttl"] != int64(43200) || d["token_prefix"] != "sk-" {
		t.Fatalf("after update: %v", d)
	}

	for _, tc := range []struct {
		data map[string]any
		want string
	}{
		{map[string]any{"proxy_url": "ftp://x"}, "scheme"},
		{map[string]any{"proxy_url": "phantom.internal"}, "proxy_url"},
		{map[string]any{"proxy_url": "https://u:p@phantom"}, "user info"},
		{map[string]any{"default_ttl": "24h"}, "must not exceed max_ttl"},
		{map[string]any{"max_ttl": "0", "default_ttl": "25h"}, "must not exceed max_ttl (24h0m0s)"}, // 0 is the finite default
		{map[string]any{"default_ttl": "-1h"}, "default_ttl"},
		{map[string]any{"token_prefix": "bad prefix"}, "token_prefix"},
		{map[string]any{"token_prefix": ""}, "token_prefix"},
		{map[string]any{"default_ttl": "soon"}, "default_ttl"},
	} {
		e.userError(t, logical.UpdateOperation, "config", tc.data, tc.want)
	}

	e.ok(t, logical.DeleteOperation, "config", nil)
	if d := e.ok(t, logical.ReadOperation, "config", nil).Data; d["token_prefix"] != "phm_" || d["proxy_url"] != "" || d["max_ttl"] != int64(86400) {
		t.Fatalf("after delete: %v", d)
	}
}
