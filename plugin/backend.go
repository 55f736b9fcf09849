// Package plugin is Phantom's Vault secrets engine. It stores upstream API
// credentials in routes and mints phantom tokens: scoped, short-lived
// stand-ins, issued as Vault leases, that phantom-proxy resolves back into the
// real credential on every request.
package plugin

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/helper/locksutil"
	"github.com/hashicorp/vault/sdk/helper/salt"
	"github.com/hashicorp/vault/sdk/logical"
)

// Version is the plugin's semantic version, reported to Vault. Release builds
// set it with -ldflags "-X github.com/phantomvault/phantom/plugin.Version=...".
var Version = "v0.1.0"

// Storage key prefixes.
const (
	configKey       = "config"
	routePrefix     = "routes/"
	tokenPrefix     = "token/"    // token/<salted HMAC of the token> -> tokenEntry
	accessorPrefix  = "accessor/" // accessor/<accessor> -> accessorEntry
	tidyInterval    = time.Hour
	tombstoneRetain = time.Hour // how long dead records still explain why
)

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
	cache *storageCache

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
		cache:      newStorageCache(now),
	}
	b.Backend = &framework.Backend{
		Help:        strings.TrimSpace(backendHelp),
		BackendType: logical.TypeLogical,
		PathsSpecial: &logical.Paths{
			// Credentials are seal-wrapped on Vaults that support it.
			SealWrapStorage: []string{routePrefix},
		},
		Paths: framework.PathAppend(
			b.pathConfig(),
			b.pathRoutes(),
			b.pathToken(),
			b.pathTokens(),
			b.pathResolve(),
			b.pathTidy(),
		),
		Secrets:        []*framework.Secret{b.secretToken()},
		PeriodicFunc:   b.periodic,
		Invalidate:     b.invalidate,
		RunningVersion: Version,
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
	if key == salt.DefaultLocation {
		b.saltMu.Lock()
		b.salt = nil
		b.saltMu.Unlock()
	}
}

// hmacToken returns the salted HMAC under which a token's record is stored;
// storage never holds the token itself.
func (b *backend) hmacToken(ctx context.Context, s logical.Storage, token string) (string, error) {
	b.saltMu.RLock()
	st := b.salt
	b.saltMu.RUnlock()
	if st == nil {
		b.saltMu.Lock()
		defer b.saltMu.Unlock()
		if b.salt == nil {
			var err error
			b.salt, err = salt.NewSalt(ctx, s, &salt.Config{
				HashFunc: salt.SHA256Hash,
				Location: salt.DefaultLocation,
			})
			if err != nil {
				return "", fmt.Errorf("loading salt: %w", err)
			}
		}
		st = b.salt
	}
	return st.GetHMAC(token), nil
}

// periodic flushes in-memory usage counters and, once per tidyInterval,
// removes dead token records. Vault calls it about once a minute.
func (b *backend) periodic(ctx context.Context, req *logical.Request) error {
	// Performance standbys and secondaries cannot write storage.
	if b.System().ReplicationState().HasState(consts.ReplicationPerformanceStandby | consts.ReplicationPerformanceSecondary) {
		return nil
	}
	if err := b.flushUsage(ctx, req.Storage); err != nil {
		return err
	}
	if b.now().Unix()-b.lastTidy.Load() < int64(tidyInterval/time.Second) {
		return nil
	}
	if _, err := b.tidy(ctx, req.Storage); err != nil && err != errTidyRunning {
		return err
	}
	return nil
}

const backendHelp = `
The Phantom secrets engine keeps real API credentials out of AI agents.

Security teams register routes (an upstream, the paths and methods an agent may
call, and the real credential). CI and agent launchers mint phantom tokens from
a route: scoped, short-lived, revocable stand-ins issued as Vault leases.
phantom-proxy resolves a phantom token on every request, swaps in the real
credential and forwards the call, so the agent never holds the key.
`
