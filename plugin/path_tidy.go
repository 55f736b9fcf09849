package plugin

import (
	"context"
	"errors"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/locksutil"
	"github.com/hashicorp/vault/sdk/logical"
)

const (
	tidyInterval    = time.Hour // how often periodic tidies by itself
	tombstoneRetain = time.Hour // how long dead records still explain why
)

var errTidyRunning = errors.New("a tidy is already running")

func (b *backend) pathTidy() []*framework.Path {
	return []*framework.Path{{
		Pattern: "tidy$",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: "phantom",
			OperationSuffix: "tokens",
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.UpdateOperation: &framework.PathOperation{
				Callback:                    b.pathTidyWrite,
				DisplayAttrs:                &framework.DisplayAttributes{OperationVerb: "tidy"},
				ForwardPerformanceStandby:   true,
				ForwardPerformanceSecondary: true,
			},
		},
		HelpSynopsis: "Remove records of expired and revoked tokens.",
		HelpDescription: `
Removes token records that have been dead (expired or revoked) for more than an
hour, and index entries that point nowhere. It reads the index one shard at a
time, and moves the index entries of live tokens minted by v0.2.0 and earlier
into the shards. Until then a dead token's record
explains why it is refused. The engine also tidies by itself every hour.
Returns the number of records removed.
`,
	}}
}

func (b *backend) pathTidyWrite(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	removed, err := b.tidy(ctx, req.Storage)
	if errors.Is(err, errTidyRunning) {
		return logical.ErrorResponse(err.Error()), nil
	}
	if err != nil {
		return nil, err
	}
	return &logical.Response{Data: map[string]any{"tokens_removed": removed}}, nil
}

// tidyIfDue tidies when the last tidy is tidyInterval old; periodic calls it.
func (b *backend) tidyIfDue(ctx context.Context, s logical.Storage) error {
	if b.now().Unix()-b.lastTidy.Load() < int64(tidyInterval/time.Second) {
		return nil
	}
	if _, err := b.tidy(ctx, s); err != nil && err != errTidyRunning {
		return err
	}
	return nil
}

// tidy removes token records dead for longer than tombstoneRetain, walking
// the accessor index one shard at a time, and moves index entries of the old
// layout into the shards (token_index.go).
func (b *backend) tidy(ctx context.Context, s logical.Storage) (removed int, err error) {
	if !b.tidying.CompareAndSwap(false, true) {
		return 0, errTidyRunning
	}
	defer b.tidying.Store(false)

	now := b.now()
	err = walkAccessors(ctx, s, "", func(accessor string, legacy bool) (bool, error) {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		tokenHMAC, err := lookupAccessor(ctx, s, accessor)
		if err != nil {
			return false, err
		}
		gone, err := b.tidyToken(ctx, s, tokenHMAC, accessor, now)
		switch {
		case err != nil:
			return false, err
		case gone:
			removed++
		case legacy:
			err = migrateAccessor(ctx, s, accessor, tokenHMAC)
		}
		return err == nil, err
	})
	if err != nil {
		return removed, err
	}
	b.lastTidy.Store(now.Unix())
	if removed > 0 {
		b.Logger().Info("tidied token records", "removed", removed)
	}
	return removed, nil
}

func (b *backend) tidyToken(ctx context.Context, s logical.Storage, tokenHMAC, accessor string, now time.Time) (bool, error) {
	lock := locksutil.LockForKey(b.tokenLocks, tokenHMAC)
	lock.Lock()
	defer lock.Unlock()

	t, err := getToken(ctx, s, tokenHMAC)
	if err != nil {
		return false, err
	}
	if t != nil {
		dead := t.deadSince(now)
		if dead.IsZero() || now.Sub(dead) < tombstoneRetain {
			return false, nil
		}
	}
	b.usage.forget(tokenHMAC)
	b.limiter.ForgetToken(tokenHMAC)
	return true, deleteToken(ctx, s, tokenHMAC, accessor)
}

// migrateAccessor moves an index entry written by an earlier version into
// its shard: written there first, so the token is never unindexed.
func migrateAccessor(ctx context.Context, s logical.Storage, accessor, tokenHMAC string) error {
	if _, ok := accessorKey(accessor); !ok {
		return nil // not shaped like an accessor: stays where it is
	}
	if err := putAccessor(ctx, s, accessor, tokenHMAC); err != nil {
		return err
	}
	return deleteLegacyAccessor(ctx, s, accessor)
}
