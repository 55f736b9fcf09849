package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/helper/locksutil"
	"github.com/hashicorp/vault/sdk/helper/salt"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/internal/scope"
)

// tokenPrefix is where token records are stored; their accessor index is in
// token_index.go.
const tokenPrefix = "token/" // token/<salted HMAC of the token> -> tokenEntry

// tokenEntry is what the engine knows of one phantom token. It is stored under
// token/<salted HMAC of the token>; the token itself is never stored.
type tokenEntry struct {
	Accessor string `json:"accessor"`
	Route    string `json:"route"`
	RouteID  string `json:"route_id"`

	// Narrower scope asked for at mint time; empty means the route's. The
	// route's current scope always applies as well.
	AllowedPaths   []string `json:"allowed_paths,omitempty"`
	AllowedMethods []string `json:"allowed_methods,omitempty"`
	AllowedActions []string `json:"allowed_actions,omitempty"` // signed routes (auth_aws.go)
	BoundCIDRs     []string `json:"bound_cidrs,omitempty"`
	// A github_app route's installation tokens, narrowed further
	// (github_app_narrow.go): repositories sorted, permissions name=level.
	Repositories []string          `json:"repositories,omitempty"`
	Permissions  map[string]string `json:"permissions,omitempty"`

	NumUses int `json:"num_uses"` // 0 is unlimited
	Uses    int `json:"uses"`     // exact, counted only when NumUses > 0

	// Limits fixed at mint (limits.go); the route's current ones apply too.
	Limits *tokenLimits `json:"limits,omitempty"`

	// Requests, LastUsedAt and the LLM token counts (input, output, and the
	// responses whose usage was estimated) are flushed from memory
	// periodically (usage.go).
	Requests     uint64    `json:"requests"`
	LastUsedAt   time.Time `json:"last_used_at"`
	InputTokens  int64     `json:"input_tokens,omitempty"`
	OutputTokens int64     `json:"output_tokens,omitempty"`
	Estimated    int64     `json:"estimated,omitempty"`

	Metadata map[string]string `json:"metadata,omitempty"`

	IssuedAt  time.Time `json:"issued_at"`
	ExpiresAt time.Time `json:"expires_at"`
	RevokedAt time.Time `json:"revoked_at"`

	// MaxExpiresAt is fixed at mint: no renewal, by whoever, goes past it.
	// Zero on records minted before it existed (see backend.renewBound).
	MaxExpiresAt time.Time `json:"max_expires_at"`

	boundCIDRs *scope.BoundCIDRs // BoundCIDRs parsed, set by UnmarshalJSON
}

// UnmarshalJSON decodes a stored record and parses its bound_cidrs once, so
// resolve (which memoizes decoded records) does not parse them per request.
func (t *tokenEntry) UnmarshalJSON(data []byte) error {
	type stored tokenEntry // without this method
	if err := json.Unmarshal(data, (*stored)(t)); err != nil {
		return err
	}
	t.boundCIDRs = scope.ParseBoundCIDRs(t.BoundCIDRs)
	return nil
}

// cidrs returns the token's bound_cidrs, parsed.
func (t *tokenEntry) cidrs() *scope.BoundCIDRs { return t.boundCIDRs.OrParse(t.BoundCIDRs) }

// accessorEntry indexes a token record by its accessor.
type accessorEntry struct {
	TokenHMAC string `json:"token_hmac"`
}

// Token states, also the deny reasons resolve returns for them.
const (
	statusActive       = "active"
	statusExpired      = resolve.ReasonExpired
	statusRevoked      = resolve.ReasonRevoked
	statusRouteDeleted = resolve.ReasonRouteDeleted
	statusExhausted    = resolve.ReasonUsesExhausted
	statusBudgetSpent  = resolve.ReasonBudgetExhausted // decided against usage in memory, not by status (resolve_limits.go)
)

// status says whether the token is usable at now, given its route's current
// entry (nil when the route is gone).
func (t *tokenEntry) status(now time.Time, route *routeEntry) string {
	switch {
	case !now.Before(t.ExpiresAt):
		return statusExpired
	case !t.RevokedAt.IsZero():
		return statusRevoked
	case route == nil || route.ID != t.RouteID:
		return statusRouteDeleted
	case t.NumUses > 0 && t.Uses >= t.NumUses:
		return statusExhausted
	}
	return statusActive
}

// deadSince returns when the token stopped being usable, or zero while it may
// still become usable (it is live or merely exhausted).
func (t *tokenEntry) deadSince(now time.Time) time.Time {
	switch {
	case !t.RevokedAt.IsZero() && t.RevokedAt.Before(t.ExpiresAt):
		return t.RevokedAt
	case !now.Before(t.ExpiresAt):
		return t.ExpiresAt
	}
	return time.Time{}
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

func getToken(ctx context.Context, s logical.Storage, tokenHMAC string) (*tokenEntry, error) {
	t, err := readJSON[tokenEntry](ctx, s, tokenPrefix+tokenHMAC)
	if err != nil {
		return nil, fmt.Errorf("reading token record: %w", err)
	}
	return t, nil
}

// getTokenShared is getToken for resolve, the hot path: the record's slices
// and maps are shared with the cache, so they must only be read.
func getTokenShared(ctx context.Context, s logical.Storage, tokenHMAC string) (*tokenEntry, error) {
	t, err := readJSONShared[tokenEntry](ctx, s, tokenPrefix+tokenHMAC)
	if err != nil {
		return nil, fmt.Errorf("reading token record: %w", err)
	}
	return t, nil
}

func putToken(ctx context.Context, s logical.Storage, tokenHMAC string, t *tokenEntry) error {
	entry, err := logical.StorageEntryJSON(tokenPrefix+tokenHMAC, t)
	if err != nil {
		return err
	}
	if err := s.Put(ctx, entry); err != nil {
		return fmt.Errorf("writing token record %s: %w", t.Accessor, err)
	}
	return nil
}

// deleteToken removes a token record and its accessor index.
func deleteToken(ctx context.Context, s logical.Storage, tokenHMAC, accessor string) error {
	if err := s.Delete(ctx, tokenPrefix+tokenHMAC); err != nil {
		return fmt.Errorf("deleting token record %s: %w", accessor, err)
	}
	return deleteAccessor(ctx, s, accessor)
}

// revokeToken marks a token revoked; it is dead on its next use. The record
// stays until tidy so resolve can say why.
func (b *backend) revokeToken(ctx context.Context, s logical.Storage, tokenHMAC string) error {
	lock := locksutil.LockForKey(b.tokenLocks, tokenHMAC)
	lock.Lock()
	defer lock.Unlock()

	t, err := getToken(ctx, s, tokenHMAC)
	if err != nil || t == nil || !t.RevokedAt.IsZero() {
		return err
	}
	t.RevokedAt = b.now().UTC()
	if err := putToken(ctx, s, tokenHMAC, t); err != nil {
		return err
	}
	b.limiter.ForgetToken(tokenHMAC)
	return nil
}
