package plugin

import (
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/phantomvault/phantom/internal/resolve"
)

// TestGitHubAppSendAs: send_as=basic hands the proxy the installation token
// as git's Basic password (x-access-token:<token>), bearer (the default,
// and what routes stored before send_as get) as a bearer key; the field is
// checked, shown by reads and bound to the private key.
func TestGitHubAppSendAs(t *testing.T) {
	gh := newGitHubStandIn(t)
	e := newOAuth2Env(t, &fakeClock{now: time.Now()}, &logical.InmemStorage{})
	with := func(k, v string) map[string]any {
		m := githubAppRoute(gh.URL)
		m[k] = v
		return m
	}
	e.userError(t, logical.UpdateOperation, "routes/bad", with("send_as", "token"), "send_as must be bearer")
	e.userError(t, logical.UpdateOperation, "routes/bad", with("send_as", "Basic"), "send_as must be bearer")
	e.writeRoute(t, "pasted", nil)
	e.userError(t, logical.UpdateOperation, "routes/pasted", map[string]any{"send_as": "basic"}, "applies only to auth_type=github_app")

	e.ok(t, logical.UpdateOperation, "routes/api", githubAppRoute(gh.URL))
	e.ok(t, logical.UpdateOperation, "routes/git", with("send_as", "basic"))
	for name, want := range map[string]string{"api": "bearer", "git": "basic"} {
		if got := e.ok(t, logical.ReadOperation, "routes/"+name, nil).Data["send_as"]; got != want {
			t.Fatalf("routes/%s reads send_as=%v, want %s", name, got, want)
		}
	}

	grant := func(route string) *resolve.Grant {
		t.Helper()
		tok, _ := e.mint(t, route, nil)
		d := e.resolve(t, tok, "GET", "/v1/x", "")
		wantAllowed(t, d)
		g := &resolve.Grant{Credential: d["credential"].(string), AuthType: d["auth_type"].(string),
			AuthName: d["auth_name"].(string), AuthFormat: d["auth_format"].(string)}
		if g.Credential == "" || g.Credential[:4] != "ghs_" {
			t.Fatalf("routes/%s: the grant's credential is not the installation token: %v", route, d)
		}
		return g
	}
	if g := grant("api"); g.AuthType != resolve.AuthBearer || g.AuthName != "Authorization" || g.AuthValue() != "Bearer "+g.Credential {
		t.Fatalf("send_as=bearer: grant %+v", g)
	}
	// The bare token is the grant's credential, which the proxy masks on
	// its own besides the Basic wires.
	if g := grant("git"); g.AuthType != resolve.AuthBasic || g.AuthName != "Authorization" || g.AuthValue() != "x-access-token:"+g.Credential {
		t.Fatalf("send_as=basic: grant %+v", g)
	}
	if typ, _, format := (&githubAppSettings{}).injection(); typ != authBearer || format != "Bearer "+resolve.Placeholder {
		t.Fatalf("a route stored before send_as sends %s %q", typ, format)
	}

	// Where the token goes is bound to the key.
	e.userError(t, logical.UpdateOperation, "routes/api", map[string]any{"send_as": "basic"}, "send private_key again")
	e.ok(t, logical.UpdateOperation, "routes/api", map[string]any{"send_as": "basic", "private_key": testAppKeyPEM()})
	e.ok(t, logical.UpdateOperation, "routes/git", map[string]any{"send_as": "basic"}) // unchanged: no key needed
	e.ok(t, logical.UpdateOperation, "routes/git", map[string]any{"allowed_methods": "GET,POST"})
	if got := e.ok(t, logical.ReadOperation, "routes/api", nil).Data["send_as"]; got != "basic" {
		t.Fatalf("after the update send_as=%v", got)
	}
}
