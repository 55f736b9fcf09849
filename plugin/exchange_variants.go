package plugin

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/phantomvault/phantom/internal/resolve"
)

// A route's exchange can have variants (a GitHub App route's narrowings,
// github_app_narrow.go), each with its own token. Two bounds keep that
// safe: every grant of the route masks the tokens of all of them (an
// upstream replaying another request's header must not hand a narrowed
// agent the route's wider token), and a route has at most maxNarrowings
// variants whose tokens live (whoever mints must not make the engine fetch,
// and keep, unboundedly many).

// maxNarrowings bounds the variants of one route with live tokens.
const maxNarrowings = 32

// othersOf is tok's masks and the live tokens of every other variant of
// route (the route's own included), at most resolve.MaxMask of them.
func (c *exchangeCache) othersOf(route string, tok liveToken) []string {
	now := c.now()
	masks := tok.masks
	seen := map[string]bool{tok.current: true}
	for _, m := range masks {
		seen[m] = true
	}
	add := func(t string) {
		if t != "" && !seen[t] && len(masks) < resolve.MaxMask {
			seen[t] = true
			masks = append(masks, t)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, key := range append([]string{route}, slices.Collect(maps.Keys(c.variants[route]))...) {
		st := c.routes[key]
		if st == nil {
			continue
		}
		if now.Before(st.rec.ExpiresAt) {
			add(st.rec.AccessToken)
		}
		for _, t := range st.rec.live(now).masks {
			add(t)
		}
	}
	return masks
}

// admitVariant lets the fetch of name go ahead unless name is a variant
// that would make its route's live variants more than maxNarrowings. It
// first forgets the route's variants whose tokens have all expired, in
// memory and storage.
func (c *exchangeCache) admitVariant(ctx context.Context, s logical.Storage, name string) error {
	route, _, isVariant := strings.Cut(name, "/")
	if !isVariant {
		return nil
	}
	now := c.now()
	var expired []string
	live := 0
	c.mu.Lock()
	for key := range c.variants[route] {
		st := c.routes[key]
		switch {
		case key == name:
		case st != nil && len(st.rec.retired(now)) > 0:
			live++
		case st != nil && (st.rec.RefreshToken != "" || now.Before(st.failedUntil)):
			// keeps what it knows
		default:
			expired = append(expired, key)
			delete(c.routes, key)
			delete(c.variants[route], key)
		}
	}
	c.mu.Unlock()
	for _, key := range expired {
		if err := s.Delete(ctx, exchangePrefix+key); err != nil {
			return fmt.Errorf("deleting an expired access token of route %q: %w", route, err)
		}
	}
	if live >= c.maxNarrowings {
		return &errExchange{fmt.Sprintf("route %q already has %d narrowings with live installation tokens; a new one is fetched when one expires", route, c.maxNarrowings)}
	}
	return nil
}
