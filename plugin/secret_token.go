package plugin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/locksutil"
	"github.com/hashicorp/vault/sdk/logical"
)

const (
	secretTokenType = "phantom_token"

	// InternalData keys: everything revoke needs, even after the route is gone.
	internalAccessor  = "accessor"
	internalTokenHMAC = "token_hmac"
	internalRoute     = "route"
	// The latest any renewal may reach, fixed at mint (RFC 3339); leases
	// minted before it existed lack it.
	internalMaxExpiresAt = "max_expires_at"
)

func (b *backend) secretToken() *framework.Secret {
	return &framework.Secret{
		Type: secretTokenType,
		Fields: map[string]*framework.FieldSchema{
			"token": {
				Type:        framework.TypeString,
				Description: "The phantom token: use it where the real API key used to go.",
			},
			"accessor": {
				Type:        framework.TypeString,
				Description: "Non-secret handle of the token, for logs and phantom/tokens/<accessor>.",
			},
		},
		Renew:  b.tokenRenew,
		Revoke: b.tokenRevoke,
	}
}

// leaseIDs returns the token HMAC and accessor recorded in a lease.
func leaseIDs(s *logical.Secret) (tokenHMAC, accessor string, err error) {
	if s == nil {
		return "", "", errors.New("request carries no lease")
	}
	tokenHMAC, ok1 := s.InternalData[internalTokenHMAC].(string)
	accessor, ok2 := s.InternalData[internalAccessor].(string)
	if !ok1 || !ok2 || tokenHMAC == "" || accessor == "" {
		return "", "", errors.New("lease is missing its token reference")
	}
	return tokenHMAC, accessor, nil
}

func (b *backend) tokenRenew(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	tokenHMAC, accessor, err := leaseIDs(req.Secret)
	if err != nil {
		return nil, err
	}
	lock := locksutil.LockForKey(b.tokenLocks, tokenHMAC)
	lock.Lock()
	defer lock.Unlock()

	t, err := getToken(ctx, req.Storage, tokenHMAC)
	if err != nil {
		return nil, err
	}
	if t == nil {
		return logical.ErrorResponse("token %s no longer exists", accessor), nil
	}
	route, err := getRoute(ctx, req.Storage, t.Route)
	if err != nil {
		return nil, err
	}
	now := b.now().UTC()
	if st := t.status(now, route); st != statusActive && st != statusExhausted {
		return logical.ErrorResponse("token %s cannot be renewed: %s", accessor, st), nil
	}
	cfg, err := getConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}

	// Whoever renews (any token may, knowing the lease ID), the answer is
	// bounded by what was fixed at mint.
	bound := b.renewBound(t, route, cfg, req.Secret)
	remaining := bound.Sub(now)
	if remaining <= 0 {
		return logical.ErrorResponse("token %s has reached its max_ttl (%s); mint a new one", accessor, bound.Format(time.RFC3339)), nil
	}
	// Never shorten either: a stranger's short increment would cut the
	// token's life, a revocation by another name. Vault sets the lease to
	// the increment whatever the answer says, so it must be refused.
	left := min(t.ExpiresAt.Sub(now), remaining)
	if inc := req.Secret.Increment; inc > 0 && inc < left.Truncate(time.Second) {
		return logical.ErrorResponse("token %s has %s left; a renewal never shortens it (revoke it instead)", accessor, left.Round(time.Second)), nil
	}
	ttl := max(firstPositive(req.Secret.Increment, route.TTL, cfg.DefaultTTL), left)
	var warnings []string
	if ttl > remaining {
		warnings = append(warnings, fmt.Sprintf("ttl capped to %s: the token may not live past %s (its max_ttl)", remaining.Round(time.Second), bound.Format(time.RFC3339)))
		ttl = remaining
	}
	t.ExpiresAt = now.Add(ttl)
	if err := putToken(ctx, req.Storage, tokenHMAC, t); err != nil {
		return nil, err
	}

	resp := &logical.Response{Secret: req.Secret, Warnings: warnings}
	resp.Secret.TTL = ttl
	resp.Secret.MaxTTL = bound.Sub(t.IssuedAt)
	return resp, nil
}

// renewBound is the latest a token may be renewed to: the bound fixed at
// mint, recorded both in its record and in its lease (the earlier wins), and
// never past its route's and the engine's current max_ttl counted from
// issue, so lowering a max_ttl bites on live tokens while raising it never
// extends them. Tokens minted before bounds were recorded get only the
// latter.
func (b *backend) renewBound(t *tokenEntry, route *routeEntry, cfg *configEntry, lease *logical.Secret) time.Time {
	bound := t.IssuedAt.Add(b.maxTTL(route, cfg))
	fixed := []time.Time{t.MaxExpiresAt}
	if s, ok := lease.InternalData[internalMaxExpiresAt].(string); ok {
		if at, err := time.Parse(time.RFC3339Nano, s); err == nil {
			fixed = append(fixed, at)
		}
	}
	for _, at := range fixed {
		if !at.IsZero() && at.Before(bound) {
			bound = at
		}
	}
	return bound
}

// The TTL helpers below serve both mint (path_token.go) and renew.
// framework.CalculateTTL does not fit either: it reads the wall clock, not
// b.now; it truncates to the second; it falls back to the mount's default
// TTL rather than the route's and the config's; and it cannot express a
// token's life fixed at mint, nor refuse a renewal that would shorten it.

// maxTTL is the longest a token of route may live: the smallest of the
// route's, the engine's (DefaultTokenMaxTTL unless configured) and the
// mount's maximums.
func (b *backend) maxTTL(route *routeEntry, cfg *configEntry) time.Duration {
	m := min(cfg.maxTTL(), b.System().MaxLeaseTTL())
	if route.MaxTTL > 0 && route.MaxTTL < m {
		m = route.MaxTTL
	}
	return m
}

// firstPositive returns the first of ds that is set (positive): a request's
// value, then its route's, then the config's.
func firstPositive(ds ...time.Duration) time.Duration {
	for _, d := range ds {
		if d > 0 {
			return d
		}
	}
	return 0
}

func (b *backend) tokenRevoke(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	tokenHMAC, _, err := leaseIDs(req.Secret)
	if err != nil {
		return nil, err
	}
	return nil, b.revokeToken(ctx, req.Storage, tokenHMAC)
}
