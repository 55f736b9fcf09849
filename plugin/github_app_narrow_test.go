package plugin

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/phantomvault/phantom/internal/resolve"
)

// TestGitHubAppMintNarrowing: a mint narrows a github_app route's
// installation tokens within the route's repositories and permissions, and
// never wider; reads show the narrowing.
func TestGitHubAppMintNarrowing(t *testing.T) {
	gh := newGitHubStandIn(t)
	e := newOAuth2Env(t, &fakeClock{now: time.Now()}, &logical.InmemStorage{})
	e.ok(t, logical.UpdateOperation, "routes/gh", githubAppRoute(gh.URL))
	all := githubAppRoute(gh.URL)
	delete(all, "repositories")
	delete(all, "permissions")
	e.ok(t, logical.UpdateOperation, "routes/gh-all", all)
	e.writeRoute(t, "plain", nil)

	for _, c := range []struct {
		route string
		data  map[string]any
		want  string
	}{
		{"gh", map[string]any{"repositories": "phantom,other"}, "repositories: other is wider than the route allows ([phantom docs])"},
		{"gh", map[string]any{"repositories": " , "}, "repositories was given but is empty"},
		{"gh", map[string]any{"repositories": "owner/phantom"}, "not a repository name"},
		{"gh", map[string]any{"permissions": "contents=write"}, "permissions: contents=write is wider than the route allows (contents=read,issues=write)"},
		{"gh", map[string]any{"permissions": "issues=admin"}, "issues=admin is wider"},
		{"gh", map[string]any{"permissions": "pull_requests=read"}, "pull_requests=read is wider"},
		{"gh", map[string]any{"permissions": ","}, "permissions was given but is empty"},
		{"gh", map[string]any{"permissions": "contents"}, "not name=level"},
		{"gh-all", map[string]any{"permissions": "contents=all"}, "read, write or admin"},
		{"gh-all", map[string]any{"repositories": "a b"}, "not a repository name"},
		{"plain", map[string]any{"repositories": "phantom"}, "repositories applies only to github_app routes"},
		{"plain", map[string]any{"permissions": "contents=read"}, "permissions applies only to github_app routes"},
	} {
		e.userError(t, logical.UpdateOperation, "token/"+c.route, c.data, c.want)
	}

	_, mint := e.mint(t, "gh", map[string]any{"repositories": "docs,phantom,docs", "permissions": "issues=read"})
	if fmt.Sprint(mint.Data["repositories"]) != "[docs phantom]" || fmt.Sprint(mint.Data["permissions"]) != "map[issues:read]" {
		t.Fatalf("mint shows %v %v", mint.Data["repositories"], mint.Data["permissions"])
	}
	read := e.ok(t, logical.ReadOperation, "tokens/"+mint.Data["accessor"].(string), nil).Data
	if fmt.Sprint(read["repositories"]) != "[docs phantom]" || fmt.Sprint(read["permissions"]) != "map[issues:read]" {
		t.Fatalf("read shows %v %v", read["repositories"], read["permissions"])
	}
	// Without a narrowing of its own, a token has the route's.
	_, wide := e.mint(t, "gh", nil)
	if fmt.Sprint(wide.Data["repositories"]) != "[phantom docs]" || fmt.Sprint(wide.Data["permissions"]) != "map[contents:read issues:write]" {
		t.Fatalf("mint shows %v %v", wide.Data["repositories"], wide.Data["permissions"])
	}
	// A route that names none (the whole installation) takes any.
	e.mint(t, "gh-all", map[string]any{"repositories": "anything", "permissions": "administration=admin"})
}

// TestGitHubAppNarrowedTokensGetTheirOwn: tokens of one route with
// different narrowings each get an installation token asked with exactly
// theirs, fetched once however many resolve at once, alone or in one batch;
// tokens of one narrowing share it; un-narrowed tokens keep the route's.
func TestGitHubAppNarrowedTokensGetTheirOwn(t *testing.T) {
	gh := newGitHubStandIn(t)
	clock := &fakeClock{now: time.Now()}
	storage := &logical.InmemStorage{}
	e := newOAuth2Env(t, clock, storage)
	e.ok(t, logical.UpdateOperation, "routes/gh", githubAppRoute(gh.URL))
	wide, _ := e.mint(t, "gh", nil)
	a, _ := e.mint(t, "gh", map[string]any{"repositories": "phantom", "permissions": "contents=read"})
	a2, _ := e.mint(t, "gh", map[string]any{"permissions": "contents=read", "repositories": "phantom,phantom"})
	b, _ := e.mint(t, "gh", map[string]any{"repositories": "docs"})
	same, _ := e.mint(t, "gh", map[string]any{"repositories": "docs,phantom"}) // the route's own narrowing
	want := map[string]string{
		wide: "phantom,docs contents=read,issues=write", same: "phantom,docs contents=read,issues=write",
		a: "phantom contents=read", a2: "phantom contents=read", b: "docs contents=read,issues=write",
	}

	gh.set("block") // every resolve arrives while the fetches are in flight
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := map[string][]any{}
	for tok := range want {
		for range 8 {
			wg.Go(func() {
				d := e.resolve(t, tok, "GET", "/v1/x", "")
				mu.Lock()
				got[tok] = append(got[tok], d["credential"])
				mu.Unlock()
			})
		}
	}
	for gh.calls.Load() < 3 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	gh.set("")
	wg.Wait()
	if n := gh.calls.Load(); n != 3 {
		t.Fatalf("3 narrowings made %d calls, want 3", n)
	}
	for tok, creds := range got {
		for _, c := range creds {
			if gh.narrowed(c) != want[tok] || c != creds[0] {
				t.Fatalf("a token narrowed to %q got %v, asked with %q", want[tok], c, gh.narrowed(c))
			}
		}
	}
	if got[a][0] != got[a2][0] || got[wide][0] != got[same][0] {
		t.Fatal("tokens of one narrowing got different installation tokens")
	}
	keys, _ := storage.List(context.Background(), exchangePrefix+"gh/")
	if storedExchange(t, storage, "gh").AccessToken != got[wide][0] || len(keys) != 2 {
		t.Fatalf("stored: the route's and %v", keys)
	}

	// One batch: each request's grant is its own token's, and the route's
	// shared grant moves onto its results (an older proxy fails closed).
	req := func(tok string) map[string]any { return map[string]any{"token": tok, "method": "GET", "path": "/v1/x"} }
	batch := e.ok(t, logical.PatchOperation, "resolve", map[string]any{"requests": []any{req(wide), req(a), req(b), req(same)}}).Data
	results, _ := batch["results"].([]map[string]any)
	for i, tok := range []string{wide, a, b, same} {
		if wantAllowed(t, results[i]); gh.narrowed(results[i]["credential"]) != want[tok] {
			t.Fatalf("batch result %d: %v", i, results[i]["credential"])
		}
	}
	if routes, _ := batch["routes"].(map[string]any); len(routes) != 0 || gh.calls.Load() != 3 {
		t.Fatalf("routes %v, %d calls", routes, gh.calls.Load())
	}

	// Another node on the same storage uses the stored tokens.
	other := newOAuth2Env(t, clock, storage)
	if d := other.resolve(t, b, "GET", "/v1/x", ""); d["credential"] != got[b][0] || gh.calls.Load() != 3 {
		t.Fatalf("another node: %v, %d calls", d["credential"], gh.calls.Load())
	}
	// Storage changed elsewhere: only that variant is dropped from memory.
	variant := exchangePrefix + exchangeKey("gh", keys[0])
	e.b.invalidate(context.Background(), variant)
	if name, _ := exchangeRouteOf(variant); name != "gh/"+keys[0] || e.b.exchanges.routes[name].rec.AccessToken != "" ||
		e.b.exchanges.routes["gh"].rec.AccessToken == "" {
		t.Fatalf("invalidating %s", variant)
	}
}

// TestGitHubAppNarrowingFollowsTheRoute: a route update fetches every
// narrowing anew and never lets a token past the route's new narrowing; a
// token the route no longer has room for is refused; deleting the route
// forgets every variant.
func TestGitHubAppNarrowingFollowsTheRoute(t *testing.T) {
	gh := newGitHubStandIn(t)
	storage := &logical.InmemStorage{}
	e := newOAuth2Env(t, &fakeClock{now: time.Now()}, storage)
	e.ok(t, logical.UpdateOperation, "routes/gh", githubAppRoute(gh.URL))
	issues, _ := e.mint(t, "gh", map[string]any{"permissions": "issues=write"})
	docs, _ := e.mint(t, "gh", map[string]any{"repositories": "docs"})
	for _, tok := range []string{issues, docs} {
		wantAllowed(t, e.resolve(t, tok, "GET", "/v1/x", ""))
	}

	// The route narrows issues to read, and to one repository: the tokens
	// are asked for anew, within it.
	e.ok(t, logical.UpdateOperation, "routes/gh", map[string]any{"permissions": "issues=read,contents=read", "private_key": testAppKeyPEM()})
	d := e.resolve(t, issues, "GET", "/v1/x", "")
	if gh.narrowed(d["credential"]) != "phantom,docs issues=read" || gh.calls.Load() != 3 {
		t.Fatalf("after the route narrowed: %v asked with %q", d["credential"], gh.narrowed(d["credential"]))
	}
	e.ok(t, logical.UpdateOperation, "routes/gh", map[string]any{"repositories": "phantom", "private_key": testAppKeyPEM()})
	d = e.resolve(t, docs, "GET", "/v1/x", "")
	wantDenied(t, d, resolve.ReasonPathNotAllowed)
	if d["message"] != "the route no longer grants any of the token's repositories" {
		t.Fatalf("message %q", d["message"])
	}
	e.ok(t, logical.UpdateOperation, "routes/gh", map[string]any{"permissions": "contents=read", "private_key": testAppKeyPEM()})
	wantDenied(t, e.resolve(t, issues, "GET", "/v1/x", ""), resolve.ReasonPathNotAllowed)

	// Deleting the route forgets the access tokens of every narrowing.
	e.ok(t, logical.DeleteOperation, "routes/gh", nil)
	if keys, _ := storage.List(context.Background(), exchangePrefix); len(keys) != 0 {
		t.Fatalf("left after delete: %v", keys)
	}
	e.b.exchanges.mu.Lock()
	left := len(e.b.exchanges.routes)
	e.b.exchanges.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d access tokens left in memory", left)
	}

	// A route that is no longer a github_app route gives a narrowed
	// token nothing: not its credential either.
	e.ok(t, logical.UpdateOperation, "routes/gh", githubAppRoute(gh.URL))
	narrowed, _ := e.mint(t, "gh", map[string]any{"repositories": "docs"})
	e.ok(t, logical.UpdateOperation, "routes/gh", map[string]any{"auth_type": "bearer", "credential": testCredential})
	d = e.resolve(t, narrowed, "GET", "/v1/x", "")
	if wantDenied(t, d, resolve.ReasonPathNotAllowed); d["credential"] != nil {
		t.Fatalf("a denial carries a credential: %v", d)
	}
}

// TestGitHubAppNarrowingsMaskedAndBounded: every grant of a route masks
// the live installation tokens of its other narrowings (an upstream that
// replays another request's header must not hand a narrowed agent the
// route's wider token), and a route has at most maxNarrowings narrowings
// with live tokens: one more waits until one expires, and expired ones are
// forgotten. (Found by an independent attack.)
func TestGitHubAppNarrowingsMaskedAndBounded(t *testing.T) {
	gh := newGitHubStandIn(t)
	clock := &fakeClock{now: time.Now()}
	storage := &logical.InmemStorage{}
	e := newOAuth2Env(t, clock, storage)
	e.b.exchanges.maxNarrowings = 2
	e.ok(t, logical.UpdateOperation, "routes/gh", githubAppRoute(gh.URL))
	wide, _ := e.mint(t, "gh", nil)
	a, _ := e.mint(t, "gh", map[string]any{"repositories": "phantom"})
	b, _ := e.mint(t, "gh", map[string]any{"repositories": "docs"})
	c, _ := e.mint(t, "gh", map[string]any{"permissions": "contents=read"})
	grants := map[string]map[string]any{}
	for range 2 { // the second time, every narrowing has its token
		for _, tok := range []string{wide, a, b} {
			grants[tok] = e.resolve(t, tok, "GET", "/v1/x", "")
			wantAllowed(t, grants[tok])
		}
	}
	for tok, g := range grants {
		masks, _ := g["mask"].([]string)
		for other, og := range grants {
			if other != tok && !slices.Contains(masks, og["credential"].(string)) {
				t.Fatalf("a grant masks %v, not another narrowing's token %v", masks, og["credential"])
			}
		}
	}

	d := e.resolve(t, c, "GET", "/v1/x", "")
	wantDenied(t, d, "credential_exchange_failed")
	if !strings.Contains(d["message"].(string), "narrowings") {
		t.Fatalf("a third narrowing: %v", d["message"])
	}
	clock.Advance(61 * time.Minute) // the narrowings' tokens have expired
	wantAllowed(t, e.resolve(t, c, "GET", "/v1/x", ""))
	if keys, _ := storage.List(context.Background(), exchangePrefix+"gh/"); len(keys) != 1 {
		t.Fatalf("stored narrowings after the others expired: %v", keys)
	}
}
