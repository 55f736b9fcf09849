package plugin

import (
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

func TestTokensReadListDelete(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "r", nil)
	tok, mint := e.mint(t, "r", map[string]any{"metadata": "agent=triage", "allowed_methods": "GET", "num_uses": 5})
	acc := mint.Data["accessor"].(string)
	e.mint(t, "r", nil)

	keys := e.ok(t, logical.ListOperation, "tokens/", nil).Data["keys"].([]string)
	if len(keys) != 2 {
		t.Fatalf("list: %v", keys)
	}
	wantAllowed(t, e.resolve(t, tok, "GET", "/v1/customers", ""))
	e.clock.Advance(time.Minute)

	d := e.ok(t, logical.ReadOperation, "tokens/"+acc, nil).Data
	if d["status"] != statusActive || d["route"] != "r" || d["uses"] != 1 || d["num_uses"] != 5 || d["requests"] != uint64(1) ||
		d["metadata"].(map[string]string)["agent"] != "triage" || d["last_used_at"] == "" || d["revoked_at"] != "" {
		t.Fatalf("read: %v", d)
	}
	if _, ok := d["token"]; ok {
		t.Fatal("token read returns the token")
	}

	e.ok(t, logical.DeleteOperation, "tokens/"+acc, nil)
	wantDenied(t, e.resolve(t, tok, "GET", "/v1/customers", ""), statusRevoked)
	if d := e.ok(t, logical.ReadOperation, "tokens/"+acc, nil).Data; d["status"] != statusRevoked || d["revoked_at"] == "" {
		t.Fatalf("after delete: %v", d)
	}
	if resp, err := e.request(t, logical.ReadOperation, "tokens/pha_nothere", nil); resp != nil || err != nil {
		t.Fatalf("unknown accessor: %v %v", resp, err)
	}
}

func TestTidy(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "r", nil)
	_, short := e.mint(t, "r", map[string]any{"ttl": "1h"})
	_, revoked := e.mint(t, "r", map[string]any{"ttl": "10h"})
	long, _ := e.mint(t, "r", map[string]any{"ttl": "10h"})
	e.revoke(t, revoked)

	tidy := func() int {
		return e.ok(t, logical.UpdateOperation, "tidy", nil).Data["tokens_removed"].(int)
	}
	if n := tidy(); n != 0 {
		t.Fatalf("tidied %d fresh records", n)
	}
	e.clock.Advance(time.Hour + 30*time.Minute) // short expired 30m ago, revoked 90m ago
	if n := tidy(); n != 1 {
		t.Fatalf("tidied %d, want the revoked one", n)
	}
	e.clock.Advance(time.Hour) // short now dead for 90m
	if n := tidy(); n != 1 {
		t.Fatalf("tidied %d, want the expired one", n)
	}
	for _, m := range []*logical.Response{short, revoked} {
		if resp, _ := e.request(t, logical.ReadOperation, "tokens/"+m.Data["accessor"].(string), nil); resp != nil {
			t.Fatalf("tidied record still readable: %v", resp.Data)
		}
	}
	wantAllowed(t, e.resolve(t, long, "GET", "/v1/customers", ""))
	if keys := e.ok(t, logical.ListOperation, "tokens/", nil).Data["keys"].([]string); len(keys) != 1 {
		t.Fatalf("left: %v", keys)
	}
}

func TestPeriodicFlushesAndTidies(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "r", nil)
	tok, mint := e.mint(t, "r", map[string]any{"ttl": "1h"})
	wantAllowed(t, e.resolve(t, tok, "GET", "/v1/customers", ""))

	e.periodic(t)
	stored, err := getToken(t.Context(), e.storage, mustHMAC(t, e, tok))
	if err != nil || stored.Requests != 1 {
		t.Fatalf("after periodic: %+v %v", stored, err)
	}
	e.clock.Advance(3 * time.Hour)
	e.periodic(t)
	if resp, _ := e.request(t, logical.ReadOperation, "tokens/"+mint.Data["accessor"].(string), nil); resp != nil {
		t.Fatal("periodic did not tidy an expired record")
	}
}
