package plugin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
	"golang.org/x/sync/singleflight"
)

// Exchanged credentials: a route's long-lived secrets are traded at an
// endpoint for a short-lived access token, which is all the proxy gets. The
// engine does the trade once for every proxy: each token is kept in memory
// and, seal-wrapped, in storage (so other nodes and restarts reuse it) until
// shortly before it expires, and one fetch per route runs at a time in this
// process however many resolves want it.
//
// A new kind (a GitHub App, a Google service account) is one exchanger: how
// to turn the route's secrets into a token and its lifetime.

// An exchanger gets an access token for route, using refreshToken (the
// latest of the route's lineage) where the kind has one.
type exchanger interface {
	exchange(ctx context.Context, c *http.Client, route *routeEntry, refreshToken string) (*exchanged, error)
}

// exchanged is what an endpoint gave.
type exchanged struct {
	AccessToken  string
	Lifetime     time.Duration // 0 when the endpoint did not say
	RefreshToken string        // a rotated refresh token; "" when none came
}

var exchangers = map[string]exchanger{
	authOAuth2ClientCredentials: oauth2ClientCredentials{},
	authOAuth2RefreshToken:      oauth2Refresh{},
	authGitHubApp:               githubApp{},
	authGoogleServiceAccount:    googleServiceAccount{},
}

// exchangePrefix is where access tokens are kept: exchanged/<route>, or
// exchanged/<route>/<variant> for a variant of the route's exchange (see
// exchangeKey) -> exchangeRecord, seal-wrapped (backend.go).
const exchangePrefix = "exchanged/"

// exchangeKey names an access token in memory and storage: its route's
// name, and the variant of the route's exchange it was fetched for, if any
// (a token's narrowing of a GitHub App's installation tokens:
// github_app_narrow.go). Each variant has its own token, fetch and
// failures; route names hold no "/".
func exchangeKey(route, variant string) string {
	if variant == "" {
		return route
	}
	return route + "/" + variant
}

const (
	// exchangeTimeout bounds one call to a token endpoint: long, since an
	// answer given up on may have rotated the refresh token (the call is
	// the engine's own; resolves wait exchangeWait at most).
	exchangeTimeout = 30 * time.Second
	// exchangeWait is how long a resolve waits for a fetch: well under the
	// proxy's deadline for a resolve (-vault-timeout, 2 s by default), so a
	// slow endpoint is a clear refusal, not a timeout; the fetch goes on,
	// and the requests after it get its token.
	exchangeWait = 750 * time.Millisecond
	// exchangeBackoff: after a failure, resolves are refused without a
	// call for this long, so a dead endpoint is not hammered.
	exchangeBackoff = 2 * time.Second
	// defaultTokenLifetime is assumed when an endpoint omits expires_in.
	defaultTokenLifetime = 5 * time.Minute
	maxTokenLifetime     = 24 * time.Hour
)

// exchangeCache holds each route's access token in memory, its failures
// for exchangeBackoff, and the fetches in flight.
type exchangeCache struct {
	mu     sync.Mutex
	routes map[string]*exchangeState // by exchangeKey
	// variants are the exchange keys of each route's variants in routes.
	variants map[string]map[string]bool
	// maxNarrowings bounds a route's variants with live tokens.
	maxNarrowings int
	flights       singleflight.Group

	client  *http.Client
	now     func() time.Time
	wait    time.Duration
	timeout time.Duration
	backoff time.Duration
	log     func() hclog.Logger
	// standby reports a node that cannot write storage: it leaves fetches
	// to the active node (logical.ErrReadOnly forwards the resolve there).
	standby func() bool
	// waits counts the resolves that waited on a fetch, the budget of
	// their call not spent yet.
	waits atomic.Int64
}

type exchangeState struct {
	rec           exchangeRecord
	failedBinding string
	failedUntil   time.Time
	// A rotated refresh token storage refused: the endpoint may have
	// invalidated the stored one, so it is used next (for its lineage).
	pendingLineage, pendingRefresh string
}

func newExchangeCache(now func() time.Time, log func() hclog.Logger, standby func() bool) *exchangeCache {
	return &exchangeCache{
		routes: map[string]*exchangeState{}, variants: map[string]map[string]bool{}, maxNarrowings: maxNarrowings,
		client: &http.Client{
			// A redirect would re-send the form (a refresh token) to
			// wherever the endpoint points: never followed.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			Timeout:       exchangeTimeout,
		},
		now: now, log: log, standby: standby,
		wait: exchangeWait, timeout: exchangeTimeout, backoff: exchangeBackoff,
	}
}

// errExchange is a failed exchange as resolve reports it; its text names
// what went wrong and never holds a secret.
type errExchange struct{ why string }

func (e *errExchange) Error() string { return e.why }

// accessToken returns route's current access token (of route's variant of
// the exchange, if any): from memory, else from storage, else fetched (once
// for all concurrent callers). An *errExchange is a refusal for the agent;
// logical.ErrReadOnly asks Vault to forward the resolve to the active node;
// any other error is storage's. From here on, name is the exchangeKey.
func (c *exchangeCache) accessToken(ctx context.Context, s logical.Storage, route string, r *routeEntry) (liveToken, error) {
	tok, err := c.variantToken(ctx, s, route, r)
	if err == nil {
		tok.masks = c.othersOf(route, tok) // exchange_variants.go
	}
	return tok, err
}

// variantToken is accessToken of route's variant alone.
func (c *exchangeCache) variantToken(ctx context.Context, s logical.Storage, route string, r *routeEntry) (liveToken, error) {
	name, binding := exchangeKey(route, r.exchangeVariant()), r.exchangeBinding()
	if tok, err, ok := c.remembered(name, binding); ok {
		return tok, err
	}
	ch := c.flights.DoChan(name+"\x00"+binding, func() (any, error) {
		// Not the caller's context: the fetch outlives a caller that gives up.
		return c.fetch(context.WithoutCancel(ctx), s, name, r, binding)
	})
	wait := c.wait
	if deadline, ok := ctx.Value(exchangeBudget{}).(time.Time); ok {
		wait = min(wait, time.Until(deadline))
	}
	if wait > 0 {
		c.waits.Add(1)
	}
	timer := time.NewTimer(max(wait, 0))
	defer timer.Stop()
	select {
	case res := <-ch:
		if res.Err != nil {
			return liveToken{}, res.Err
		}
		return res.Val.(liveToken), nil
	case <-timer.C:
		return liveToken{}, &errExchange{"the token endpoint has not answered yet"}
	case <-ctx.Done():
		return liveToken{}, &errExchange{"the resolve was cancelled while the token endpoint was called"}
	}
}

// exchangeBudget is the context key of when a resolve call stops waiting
// for fetches: one budget for the call, however many of its requests wait
// (a batch of requests on a slow endpoint's route must not hold the call,
// and every other route's request in it, past the proxy's deadline).
type exchangeBudget struct{}

// withExchangeBudget is ctx with the call's budget for waiting on fetches.
func (c *exchangeCache) withExchangeBudget(ctx context.Context) context.Context {
	return context.WithValue(ctx, exchangeBudget{}, time.Now().Add(c.wait))
}

// remembered answers from memory: a live token, or a recent failure.
func (c *exchangeCache) remembered(name, binding string) (liveToken, error, bool) {
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.routes[name]
	switch {
	case st == nil:
		return liveToken{}, nil, false
	case st.rec.Binding == binding && now.Before(st.rec.RefreshAt):
		return st.rec.live(now), nil, true
	case st.failedBinding == binding && now.Before(st.failedUntil):
		return liveToken{}, &errExchange{"the token endpoint failed moments ago"}, true
	}
	return liveToken{}, nil, false
}

func (c *exchangeCache) state(name string) *exchangeState {
	st := c.routes[name]
	if st == nil {
		st = &exchangeState{}
		c.routes[name] = st
		if route, _, isVariant := strings.Cut(name, "/"); isVariant {
			if c.variants[route] == nil {
				c.variants[route] = map[string]bool{}
			}
			c.variants[route][name] = true
		}
	}
	return st
}

// fetch runs once per route and binding at a time: it takes a token another
// node (or an earlier life of this one) stored if it is still fresh, else
// calls the endpoint and stores what it gave before anyone uses it.
func (c *exchangeCache) fetch(ctx context.Context, s logical.Storage, name string, route *routeEntry, binding string) (any, error) {
	if tok, err, ok := c.remembered(name, binding); ok { // a fetch that just ended
		return tok, err
	}
	now := c.now()
	stored, err := readJSON[exchangeRecord](ctx, s, exchangePrefix+name)
	if err != nil {
		return nil, fmt.Errorf("reading the access token of route %q: %w", name, err)
	}
	if stored != nil && stored.Binding == binding && now.Before(stored.RefreshAt) {
		c.mu.Lock()
		c.state(name).rec = *stored
		c.mu.Unlock()
		return stored.live(now), nil
	}
	if c.standby() {
		return nil, logical.ErrReadOnly
	}
	if err := c.admitVariant(ctx, s, name); err != nil { // exchange_variants.go
		return nil, err
	}

	lineage := route.refreshLineage()
	routeRefresh := route.refreshToken()
	refresh := routeRefresh
	c.mu.Lock()
	st := c.state(name)
	last := st.rec // the token this fetch replaces, if this node has it
	if stored != nil && stored.ObtainedAt.After(last.ObtainedAt) {
		last = *stored
	}
	if st.pendingLineage == lineage && st.pendingRefresh != "" {
		refresh = st.pendingRefresh
	} else if stored != nil && stored.Lineage == lineage && stored.RefreshToken != "" {
		refresh = stored.RefreshToken
	}
	c.mu.Unlock()

	callCtx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	got, err := exchangers[route.AuthType].exchange(callCtx, c.client, route, refresh)
	if err != nil {
		if got != nil && got.RefreshToken != "" && got.RefreshToken != refresh {
			c.keepRotated(ctx, s, name, exchangeRecord{Binding: binding, Lineage: lineage, RefreshToken: got.RefreshToken, ObtainedAt: now,
				Earlier: last.retired(now)})
		}
		return nil, c.failed(name, binding, err)
	}
	life := got.Lifetime
	if life <= 0 {
		life = defaultTokenLifetime
	}
	life = min(life, maxTokenLifetime)
	rec := exchangeRecord{
		Binding: binding, AccessToken: got.AccessToken, ObtainedAt: now,
		RefreshAt: now.Add(max(refreshAfter(life), time.Second)), ExpiresAt: now.Add(life),
	}
	rec.Earlier = last.retired(now)
	rotated := got.RefreshToken != "" && got.RefreshToken != refresh
	if rotated {
		refresh = got.RefreshToken
	}
	if refresh != routeRefresh { // rotated, now or before: kept
		rec.Lineage, rec.RefreshToken = lineage, refresh
	}
	// Stored before it is used: a rotated refresh token must survive this
	// process. One Put replaces the old record, so the last good refresh
	// token is never lost.
	entry, err := logical.StorageEntryJSON(exchangePrefix+name, rec)
	if err == nil {
		err = s.Put(ctx, entry)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	st = c.state(name)
	if err != nil {
		if rotated {
			st.pendingLineage, st.pendingRefresh = lineage, refresh
			st.failedBinding, st.failedUntil = binding, c.now().Add(c.backoff)
			c.log().Error("storing a rotated refresh token failed; the access token is not used", "route", name, "error", err)
			return nil, &errExchange{"the rotated refresh token could not be stored"}
		}
		// Nothing lost: this node uses the token, others fetch their own.
		c.log().Warn("storing an access token failed", "route", name, "error", err)
	}
	st.rec, st.failedBinding, st.pendingLineage, st.pendingRefresh = rec, "", "", ""
	return rec.live(now), nil
}

// keepRotated stores a refresh token an endpoint rotated to in an answer
// that was refused for another reason (its access token, its lifetime):
// the endpoint may have invalidated the one sent. rec holds no access
// token, so nothing uses it but the next fetch.
func (c *exchangeCache) keepRotated(ctx context.Context, s logical.Storage, name string, rec exchangeRecord) {
	entry, err := logical.StorageEntryJSON(exchangePrefix+name, rec)
	if err == nil {
		err = s.Put(ctx, entry)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		st := c.state(name)
		st.pendingLineage, st.pendingRefresh = rec.Lineage, rec.RefreshToken
		c.log().Error("storing a rotated refresh token failed", "route", name, "error", err)
	}
}

// failed remembers a failure for the backoff and logs it. err's text comes
// from exchange_oauth2.go, which never quotes what the endpoint said
// beyond an RFC 6749 error code.
func (c *exchangeCache) failed(name, binding string, err error) error {
	c.mu.Lock()
	st := c.state(name)
	st.failedBinding, st.failedUntil = binding, c.now().Add(c.backoff)
	c.mu.Unlock()
	c.log().Warn("getting an access token failed", "route", name, "error", err)
	var ex *errExchange
	if errors.As(err, &ex) {
		return ex
	}
	return &errExchange{err.Error()}
}

// forget drops a deleted route's tokens, of every variant.
func (c *exchangeCache) forget(ctx context.Context, s logical.Storage, name string) error {
	variants, err := s.List(ctx, exchangePrefix+name+"/")
	if err != nil {
		return fmt.Errorf("listing the access tokens of route %q: %w", name, err)
	}
	c.mu.Lock()
	delete(c.routes, name)
	for key := range c.variants[name] {
		delete(c.routes, key)
	}
	delete(c.variants, name)
	c.mu.Unlock()
	keys := []string{name}
	for _, v := range variants {
		keys = append(keys, exchangeKey(name, v))
	}
	for _, key := range keys {
		if err := s.Delete(ctx, exchangePrefix+key); err != nil {
			return fmt.Errorf("deleting the access token of route %q: %w", name, err)
		}
	}
	return nil
}

// invalidate drops what memory holds of a token (by exchangeKey), when
// another node stored a newer one.
func (c *exchangeCache) invalidate(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.routes[name]; st != nil {
		st.rec = exchangeRecord{}
	}
}

// exchangeRouteOf is the exchangeKey of the access token stored under key
// (its route's name, and "/<variant>" for a variant), if key is one.
func exchangeRouteOf(key string) (string, bool) {
	return strings.CutPrefix(key, exchangePrefix)
}

// isStandby reports a node whose storage writes Vault forwards.
func isStandby(sys interface {
	ReplicationState() consts.ReplicationState
}) bool {
	return sys.ReplicationState().HasState(consts.ReplicationPerformanceStandby | consts.ReplicationPerformanceSecondary)
}
