package plugin

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

func (b *backend) pathTokens() []*framework.Path {
	return []*framework.Path{
		{
			Pattern: "tokens/?$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: "phantom",
				OperationSuffix: "tokens",
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{
					Callback:     b.pathTokensList,
					DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "list"},
				},
			},
			HelpSynopsis:    "List the accessors of all token records.",
			HelpDescription: "Lists the accessors of every token record the engine still keeps, live or dead until tidied. Read phantom/tokens/<accessor> for one token.",
		},
		{
			Pattern: "tokens/" + framework.GenericNameRegex("accessor"),
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: "phantom",
				OperationSuffix: "token-by-accessor",
			},
			Fields: map[string]*framework.FieldSchema{
				"accessor": {
					Type:        framework.TypeString,
					Description: "Accessor of the token, as returned when it was minted and written to audit logs.",
					Required:    true,
				},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback:     b.pathTokenRead,
					DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "read"},
				},
				logical.DeleteOperation: &framework.PathOperation{
					Callback:                    b.pathTokenDelete,
					DisplayAttrs:                &framework.DisplayAttributes{OperationVerb: "revoke"},
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
			},
			HelpSynopsis:    "Read or revoke one token by its accessor.",
			HelpDescription: tokensHelp,
		},
	}
}

func (b *backend) pathTokensList(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	accessors, err := req.Storage.List(ctx, accessorPrefix)
	if err != nil {
		return nil, fmt.Errorf("listing tokens: %w", err)
	}
	return logical.ListResponse(accessors), nil
}

func (b *backend) pathTokenRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	tokenHMAC, err := lookupAccessor(ctx, req.Storage, d.Get("accessor").(string))
	if err != nil || tokenHMAC == "" {
		return nil, err
	}
	t, err := getToken(ctx, req.Storage, tokenHMAC)
	if err != nil || t == nil {
		return nil, err
	}
	route, err := getRoute(ctx, req.Storage, t.Route)
	if err != nil {
		return nil, err
	}
	pending, lastUsed := b.usage.pending(tokenHMAC)
	if t.LastUsedAt.After(lastUsed) {
		lastUsed = t.LastUsedAt
	}
	data := map[string]any{
		"accessor":        t.Accessor,
		"route":           t.Route,
		"status":          t.status(b.now(), route),
		"issued_at":       t.IssuedAt.Format(time.RFC3339),
		"expires_at":      t.ExpiresAt.Format(time.RFC3339),
		"max_expires_at":  formatTime(t.MaxExpiresAt),
		"revoked_at":      formatTime(t.RevokedAt),
		"last_used_at":    formatTime(lastUsed),
		"requests":        t.Requests + pending,
		"num_uses":        t.NumUses,
		"uses":            t.Uses,
		"allowed_paths":   nonNil(t.AllowedPaths),
		"allowed_methods": nonNil(t.AllowedMethods),
		"bound_cidrs":     nonNil(t.BoundCIDRs),
		"metadata":        t.Metadata,
	}
	if t.Metadata == nil {
		data["metadata"] = map[string]string{}
	}
	return &logical.Response{Data: data}, nil
}

func (b *backend) pathTokenDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	tokenHMAC, err := lookupAccessor(ctx, req.Storage, d.Get("accessor").(string))
	if err != nil || tokenHMAC == "" {
		return nil, err
	}
	return nil, b.revokeToken(ctx, req.Storage, tokenHMAC)
}

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

const tokensHelp = `
Reading returns what the engine knows of one token, never the token itself:
route, status (active, expired, revoked, route_deleted, uses_exhausted),
issued_at, expires_at, max_expires_at (the latest any renewal may reach,
fixed at mint), revoked_at, usage (requests and last_used_at, flushed
from memory about once a minute; uses, exact, for num_uses tokens), its own
narrowed scope (empty means the route's) and metadata.

Deleting revokes the token: it is dead on its next use. Its Vault lease stays
listed until it expires; revoking the lease (vault lease revoke) is the
equivalent when the lease id is known.
`
