package plugin

import (
	"context"
	"fmt"
	"maps"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/phantomvault/phantom/internal/limits"
)

func (b *backend) pathTokens() []*framework.Path {
	return []*framework.Path{
		{
			Pattern: "tokens/?$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: "phantom",
				OperationSuffix: "tokens",
			},
			Fields: map[string]*framework.FieldSchema{
				"after": {
					Type:        framework.TypeString,
					Description: "List only the accessors that sort after this one: the last key of the previous page.",
				},
				"limit": {
					Type:        framework.TypeInt,
					Default:     defaultListLimit,
					Description: fmt.Sprintf("The most accessors to return, 1 to %d.", maxListLimit),
				},
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{
					Callback:     b.pathTokensList,
					DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "list"},
				},
			},
			HelpSynopsis:    "List the accessors of token records, a page at a time.",
			HelpDescription: tokensListHelp,
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

// Page sizes of LIST phantom/tokens.
const (
	defaultListLimit = 1000
	maxListLimit     = 10000
)

func (b *backend) pathTokensList(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	limit := d.Get("limit").(int)
	if limit < 1 || limit > maxListLimit {
		return logical.ErrorResponse("limit must be between 1 and %d, not %d", maxListLimit, limit), nil
	}
	page := make([]string, 0, min(limit, defaultListLimit))
	err := walkAccessors(ctx, req.Storage, d.Get("after").(string), func(accessor string, _ bool) (bool, error) {
		page = append(page, accessor)
		return len(page) < limit, nil
	})
	if err != nil {
		return nil, err
	}
	return logical.ListResponse(page), nil
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
	totals, lastUsed := b.usage.totals(tokenHMAC, t)
	status := t.status(b.now(), route)
	data := map[string]any{
		"accessor":             t.Accessor,
		"route":                t.Route,
		"status":               status,
		"issued_at":            t.IssuedAt.Format(time.RFC3339),
		"expires_at":           t.ExpiresAt.Format(time.RFC3339),
		"max_expires_at":       formatTime(t.MaxExpiresAt),
		"revoked_at":           formatTime(t.RevokedAt),
		"last_used_at":         formatTime(lastUsed),
		"num_uses":             t.NumUses,
		"uses":                 t.Uses,
		"allowed_paths":        nonNil(t.AllowedPaths),
		"allowed_methods":      nonNil(t.AllowedMethods),
		"allowed_actions":      nonNil(t.AllowedActions),
		"bound_cidrs":          nonNil(t.BoundCIDRs),
		"repositories":         nonNil(t.Repositories),
		"permissions":          t.Permissions,
		"metadata":             t.Metadata,
		"rate_limit":           "",
		"rate_limit_remaining": nil,
		"token_budget":         int64(0),
		"budget_remaining":     nil,
		"budget_reserved":      int64(0),
		"budget_in_flight":     0,
		"max_output_tokens":    int64(0),
		"allowed_models":       []string{},
	}
	maps.Copy(data, totals.data())
	if route != nil && route.ID == t.RouteID {
		// The limits that apply now: the token's and its route's.
		lim := effective(t, route)
		data["rate_limit"] = lim.rate.String()
		if lim.rate != nil {
			data["rate_limit_remaining"] = b.limiter.Remaining(b.now(), limits.Check{Key: tokenHMAC, Rate: lim.rate})
		}
		data["token_budget"] = lim.budget
		data["max_output_tokens"] = lim.maxOutputTokens
		data["allowed_models"] = nonNil(lim.models)
		if lim.budget > 0 {
			spent := limits.SatAdd(totals.InputTokens, totals.OutputTokens)
			inFlight, reserved := b.usage.reserved(tokenHMAC, b.now())
			data["budget_remaining"] = max(lim.budget-limits.SatAdd(spent, reserved), 0)
			data["budget_reserved"] = reserved
			data["budget_in_flight"] = inFlight
			if status == statusActive && spent >= lim.budget {
				data["status"] = statusBudgetSpent
			}
		}
	}
	if t.Metadata == nil {
		data["metadata"] = map[string]string{}
	}
	if t.Permissions == nil {
		data["permissions"] = map[string]string{}
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

const tokensListHelp = `
Lists the accessors of the token records the engine still keeps, live or dead
until tidied, in order, at most limit (default 1000, at most 10000) at a time.
To page, call again with after set to the last key of the previous page; an
empty page is the end. Read phantom/tokens/<accessor> for one token.

The vault list command passes no parameters: use the HTTP API,
LIST /v1/phantom/tokens?limit=500&after=<last key>, or vault read with
list=true: vault read phantom/tokens/ list=true limit=500 after=<last key>.
`

const tokensHelp = `
Reading returns what the engine knows of one token, never the token itself:
route, status (active, expired, revoked, route_deleted, uses_exhausted,
budget_exhausted), issued_at, expires_at, max_expires_at (the latest any
renewal may reach, fixed at mint), revoked_at, usage (requests,
last_used_at, and the LLM tokens the proxy reported: input_tokens,
output_tokens, and estimated_responses, responses whose usage could not be
read and were charged at their output cap; kept in memory, flushed about
once a minute, always shown whole; uses, exact, for num_uses tokens), its
own narrowed scope (empty means the route's), metadata, and the limits that
apply now, the stricter of the token's and its route's current ones:
rate_limit and rate_limit_remaining (requests it could make at once now),
token_budget, budget_remaining (the budget less what was spent and what
requests in flight reserve), budget_reserved and budget_in_flight (the
output caps held by, and the number of, requests admitted under the budget
and not yet settled by the proxy's usage reports), max_output_tokens,
allowed_models.

Deleting revokes the token: it is dead on its next use. Its Vault lease stays
listed until it expires; revoking the lease (vault lease revoke) is the
equivalent when the lease id is known.
`
