package e2e

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phantomvault/phantom/e2e/harness"
)

// TestGitHubAppNarrowedTokens: tokens of one github_app route minted with
// narrower repositories and permissions, through real Vault, the plugin
// binary and a proxy. The stand-in GitHub sees exactly each token's
// narrowing in its token request (the route-wide token the route's); many
// concurrent requests (which the proxy batches) cost one token request per
// narrowing; every request upstream carries its own token's installation
// token, never another narrowing's.
func TestGitHubAppNarrowedTokens(t *testing.T) {
	v := harness.StartPersistentVault(t)
	key, _, keyPEM := newE2EAppKey(t)

	var mu sync.Mutex
	asked := map[string]string{} // installation token -> the narrowing it was asked with
	var bad []string
	github := harness.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Repositories []string          `json:"repositories"`
			Permissions  map[string]string `json:"permissions"`
		}
		json.NewDecoder(r.Body).Decode(&body)
		time.Sleep(150 * time.Millisecond) // the concurrent requests pile up behind the fetch
		mu.Lock()
		defer mu.Unlock()
		if why := checkE2EAppJWT(&key.PublicKey, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")); why != "" {
			bad = append(bad, why)
			w.WriteHeader(401)
			return
		}
		tok := fmt.Sprintf("ghs_e2eNARROW%03d%s", len(asked)+1, strings.Repeat("n", 20))
		asked[tok] = narrowingOf(body.Repositories, body.Permissions)
		w.WriteHeader(201)
		fmt.Fprintf(w, `{"token":%q,"expires_at":%q}`, tok, time.Now().Add(time.Hour).UTC().Format(time.RFC3339))
	}))
	upAuth := map[string][]string{} // the path's last segment (which token) -> Authorization seen
	up := harness.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		who := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
		upAuth[who] = append(upAuth[who], strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		mu.Unlock()
		fmt.Fprint(w, `{"ok":true}`)
	}))
	v.MustCLI(t, "write", "phantom/routes/gh", "upstream="+up.URL, "auth_type=github_app", "app_id=1001",
		"installation_id=7", "github_api_url="+github.URL, "private_key="+keyPEM, "repositories=phantom,docs",
		"permissions=contents=read,issues=write", "allowed_paths=/repos/**", "allowed_methods=GET")
	p := harness.StartProxy(t, v)

	tokens := map[string]string{}
	tokens["wide"], _ = v.Mint(t, "gh", "ttl=1h")
	tokens["phantom"], _ = v.Mint(t, "gh", "ttl=1h", "repositories=phantom", "permissions=contents=read")
	tokens["docs"], _ = v.Mint(t, "gh", "ttl=1h", "repositories=docs")
	want := map[string]string{
		"wide":    "docs,phantom contents=read,issues=write",
		"phantom": "phantom contents=read",
		"docs":    "docs contents=read,issues=write",
	}
	if _, stderr, err := v.Run(t, "read", "phantom/token/gh", "repositories=phantom,other"); err == nil || !strings.Contains(stderr, "other is wider than the route allows") {
		t.Fatalf("a wider mint: %v %s", err, stderr)
	}

	var wg sync.WaitGroup
	for range 8 {
		for who, tok := range tokens {
			wg.Go(func() {
				if code, body, _ := p.Do(t, "GET", "/repos/o/"+who, tok, "", nil); code != 200 {
					t.Errorf("%s: %d %s", who, code, body)
				}
			})
		}
	}
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 || len(asked) != 3 || !slices.Equal(slices.Sorted(maps.Values(asked)), slices.Sorted(maps.Values(want))) {
		t.Fatalf("24 concurrent requests of 3 narrowings made %d token requests, asked with %v (want one each of %v); refused: %v",
			len(asked), slices.Collect(maps.Values(asked)), slices.Collect(maps.Values(want)), bad)
	}
	for who, auths := range upAuth {
		for _, auth := range auths {
			if got, ok := asked[auth]; !ok || got != want[who] {
				t.Errorf("a request of the %s token reached the upstream with an installation token asked with %q, want %q", who, got, want[who])
			}
		}
	}
	if n := len(upAuth["wide"]) + len(upAuth["phantom"]) + len(upAuth["docs"]); n != 24 {
		t.Errorf("the upstream saw %d requests, want 24", n)
	}
}

// narrowingOf writes a token request's narrowing as "repos perms", sorted.
func narrowingOf(repos []string, perms map[string]string) string {
	pairs := []string{}
	for _, k := range slices.Sorted(maps.Keys(perms)) {
		pairs = append(pairs, k+"="+perms[k])
	}
	return strings.Join(slices.Sorted(slices.Values(repos)), ",") + " " + strings.Join(pairs, ",")
}
