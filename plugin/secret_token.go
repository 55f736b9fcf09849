package plugin

import (
	"context"
	"errors"
	"fmt"

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

	maxTTL := b.maxTTL(route, cfg)
	ttl := firstPositive(req.Secret.Increment, route.TTL, cfg.DefaultTTL)
	remaining := t.IssuedAt.Add(maxTTL).Sub(now)
	if remaining <= 0 {
		return logical.ErrorResponse("token %s has reached its max_ttl of %s", accessor, maxTTL), nil
	}
	var warnings []string
	if ttl > remaining {
		warnings = append(warnings, fmt.Sprintf("ttl capped to %s by the max_ttl of %s", remaining.Round(1e9), maxTTL))
		ttl = remaining
	}
	t.ExpiresAt = now.Add(ttl)
	if err := putToken(ctx, req.Storage, tokenHMAC, t); err != nil {
		return nil, err
	}

	resp := &logical.Response{Secret: req.Secret, Warnings: warnings}
	resp.Secret.TTL = ttl
	resp.Secret.MaxTTL = maxTTL
	return resp, nil
}

func (b *backend) tokenRevoke(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	tokenHMAC, _, err := leaseIDs(req.Secret)
	if err != nil {
		return nil, err
	}
	return nil, b.revokeToken(ctx, req.Storage, tokenHMAC)
}
