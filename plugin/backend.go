// Package plugin is Phantom's Vault secrets engine. It stores upstream API
// credentials in routes and mints phantom tokens: scoped, short-lived
// stand-ins, issued as Vault leases, that phantom-proxy resolves back into the
// real credential on every request.
package plugin

import (
	"context"
	"crypto/rand"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/helper/locksutil"
	"github.com/hashicorp/vault/sdk/helper/salt"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/phantomvault/phantom/internal/limits"
	"github.com/phantomvault/phantom/internal/version"
)

// Each storage prefix is declared beside the code that owns its records:
// configKey (path_config.go), routePrefix (route.go), tokenPrefix
// (token_entry.go), accessorsPrefix and the older accessorPrefix
// (token_index.go).

// Factory returns a configured Phantom backend.
func Factory(ctx context.Context, conf *logical.BackendConfig) (logical.Backend, error) {
	b := newBackend(time.Now, rand.Reader)
	if err := b.Setup(ctx, conf); err != nil {
		return nil, err
	}
	return b, nil
}

type backend struct {
	*framework.Backend

	now  func() time.Time
	rand io.Reader

	saltMu sync.RWMutex
	salt   *salt.Salt

	// routeLocks serialise writes of one route; tokenLocks serialise the
	// read-modify-write of one token record (num_uses, renew, revoke, usage).
	routeLocks []*locksutil.LockEntry
	tokenLocks []*locksutil.LockEntry

	usage *usageCounter
	// limiter holds the rate windows, keyed by token HMAC and route ID, in
	// memory only: resolve writes no storage for them.
	limiter *limits.Limiter
	cache   *storageCache
	// tunnelOrigins answers CONNECTs without a token (path_tunnel.go).
	tunnelOrigins tunnelOrigins
	// exchanges holds oauth2 routes' access tokens (exchange.go).
	exchanges *exchangeCache

	tidying  atomic.Bool
	lastTidy atomic.Int64 // unix seconds
}

func newBackend(now func() time.Time, random io.Reader) *backend {
	b := &backend{
		now:        now,
		rand:       random,
		routeLocks: locksutil.CreateLocks(),
		tokenLocks: locksutil.CreateLocks(),
		usage:      newUsageCounter(),
		limiter:    limits.NewLimiter(),
		cache:      newStorageCache(now),
	}
	b.exchanges = newExchangeCache(now, func() hclog.Logger { return b.Logger() }, func() bool { return isStandby(b.System()) })
	b.Backend = &framework.Backend{
		Help:        strings.TrimSpace(backendHelp),
		BackendType: logical.TypeLogical,
		PathsSpecial: &logical.Paths{
			// Credentials are seal-wrapped on Vaults that support it.
			SealWrapStorage: []string{routePrefix, exchangePrefix},
		},
		Paths: framework.PathAppend(
			b.pathConfig(),
			b.pathRoutes(),
			b.pathToken(),
			b.pathTokens(),
			b.pathResolve(),
			b.pathUsage(),
			b.pathTunnel(),
			b.pathTidy(),
		),
		Secrets:        []*framework.Secret{b.secretToken()},
		PeriodicFunc:   b.periodic,
		Invalidate:     b.invalidate,
		RunningVersion: version.Version, // the one version of both binaries, set at build time
	}
	return b
}

// HandleRequest serves every request with the cached view of its storage,
// so that all of this process's reads and writes go through the cache.
func (b *backend) HandleRequest(ctx context.Context, req *logical.Request) (*logical.Response, error) {
	req.Storage = b.cache.wrap(req.Storage)
	return b.Backend.HandleRequest(ctx, req)
}

// invalidate runs when storage changed elsewhere (replication, another node).
func (b *backend) invalidate(_ context.Context, key string) {
	if cacheable(key) {
		b.cache.wrote(key, nil)
	}
	if name, ok := exchangeRouteOf(key); ok {
		b.exchanges.invalidate(name)
	}
	if key == salt.DefaultLocation {
		b.saltMu.Lock()
		b.salt = nil
		b.saltMu.Unlock()
	}
}

// periodic drops rate-limit windows that have passed (limits.Limiter) and
// expired budget reservations (budget.go), flushes
// in-memory usage counters (usage.go) and, when due,
// removes dead token records (path_tidy.go). Vault calls it about once a
// minute.
func (b *backend) periodic(ctx context.Context, req *logical.Request) error {
	b.limiter.Sweep(b.now()) // memory only: on every node
	b.usage.sweepReservations(b.now())
	// Performance standbys and secondaries cannot write storage.
	if b.System().ReplicationState().HasState(consts.ReplicationPerformanceStandby | consts.ReplicationPerformanceSecondary) {
		return nil
	}
	if err := b.flushUsage(ctx, req.Storage); err != nil {
		return err
	}
	return b.tidyIfDue(ctx, req.Storage)
}

const backendHelp = `
The Phantom secrets engine keeps real API credentials out of AI agents.

Security teams register routes (an upstream, the paths and methods an agent may
call, and the real credential). CI and agent launchers mint phantom tokens from
a route: scoped, short-lived, revocable stand-ins issued as Vault leases.
phantom-proxy resolves a phantom token on every request, swaps in the real
credential and forwards the call, so the agent never holds the key.
`
