package plugin

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
	"golang.org/x/net/http/httpguts"

	"github.com/phantomvault/phantom/internal/scope"
	"github.com/phantomvault/phantom/internal/token"
)

const (
	maxMetadataPairs = 32
	maxMetadataKey   = 128
	maxMetadataValue = 512
)

func (b *backend) pathToken() []*framework.Path {
	mint := func(verb string) *framework.PathOperation {
		return &framework.PathOperation{
			Callback:                    b.pathTokenMint,
			DisplayAttrs:                &framework.DisplayAttributes{OperationVerb: verb},
			ForwardPerformanceStandby:   true,
			ForwardPerformanceSecondary: true,
		}
	}
	fields := mintLimitFields()
	maps.Copy(fields, githubAppMintFields())
	maps.Copy(fields, map[string]*framework.FieldSchema{
		"route": {
			Type:        framework.TypeString,
			Description: "Name of the route to mint a token for.",
			Required:    true,
		},
		"ttl": {
			Type:        framework.TypeDurationSecond,
			Description: "Token lifetime, for example 1h. Default: the route's ttl, else the engine's default_ttl (24h). Capped at max_ttl.",
		},
		"max_ttl": {
			Type:        framework.TypeDurationSecond,
			Description: "Longest the token may live, renewals included, fixed now: no renewal by anyone goes past it. Default: the token's ttl (renewals cannot extend it). Capped at the route's max_ttl.",
		},
		"num_uses": {
			Type:        framework.TypeInt,
			Description: "Maximum requests the token may make; 0 is unlimited. At most the route's num_uses when the route sets one.",
		},
		"allowed_paths": {
			Type:        framework.TypeCommaStringSlice,
			Description: "Narrower path patterns than the route's; each must lie within one of the route's patterns.",
		},
		"allowed_methods": {
			Type:        framework.TypeCommaStringSlice,
			Description: "Narrower methods than the route's; each must be one of the route's.",
		},
		"allowed_actions": {
			Type:        framework.TypeCommaStringSlice,
			Description: "aws_sigv4 routes: narrower API operations than the route's (globs such as s3:GetObject); each must lie within one of the route's allowed_actions.",
		},
		"bound_cidrs": {
			Type:        framework.TypeCommaStringSlice,
			Description: "Client addresses (CIDR blocks) the token may be used from; within the route's bound_cidrs when it sets any.",
		},
		"metadata": {
			Type:        framework.TypeKVPairs,
			Description: "Labels kept with the token and shown on phantom/tokens/<accessor>, for example agent=triage-bot.",
		},
	})
	return []*framework.Path{{
		Pattern: "token/" + framework.GenericNameRegex("route"),
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: "phantom",
			OperationSuffix: "token",
		},
		Fields: fields,
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation:   mint("generate"),
			logical.UpdateOperation: mint("generate-with-parameters"),
		},
		HelpSynopsis:    "Mint a phantom token for a route.",
		HelpDescription: tokenHelp,
	}}
}

func (b *backend) pathTokenMint(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("route").(string)
	route, err := getRoute(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if route == nil {
		// A 400 with a message: the CLI would print a bare 404 as "No value found".
		return logical.ErrorResponse("no route named %q", name), nil
	}
	cfg, err := getConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}

	now := b.now().UTC()
	t := &tokenEntry{Route: name, RouteID: route.ID, IssuedAt: now, NumUses: route.NumUses}
	if errResp := narrowScope(t, route, d); errResp != nil {
		return errResp, nil
	}
	if errResp := narrowGitHubApp(t, route, d); errResp != nil {
		return errResp, nil
	}
	if errResp := narrowLimits(t, route, d); errResp != nil {
		return errResp, nil
	}

	ttl, life, warnings, errResp := b.mintLifetime(d, route, cfg)
	if errResp != nil {
		return errResp, nil
	}
	t.ExpiresAt = now.Add(ttl)
	t.MaxExpiresAt = now.Add(life)

	tok, err := token.New(b.rand, orDefault(route.TokenPrefix, cfg.TokenPrefix))
	if err != nil {
		return nil, err
	}
	if t.Accessor, err = token.NewAccessor(b.rand); err != nil {
		return nil, err
	}
	tokenHMAC, err := b.hmacToken(ctx, req.Storage, tok)
	if err != nil {
		return nil, err
	}
	if err := putToken(ctx, req.Storage, tokenHMAC, t); err != nil {
		return nil, err
	}
	if err := putAccessor(ctx, req.Storage, t.Accessor, tokenHMAC); err != nil {
		return nil, err
	}

	lim := effective(t, route)
	resp := b.Secret(secretTokenType).Response(map[string]any{
		"token":             tok,
		"accessor":          t.Accessor,
		"route":             name,
		"expires_at":        t.ExpiresAt.Format(time.RFC3339),
		"max_expires_at":    t.MaxExpiresAt.Format(time.RFC3339),
		"proxy_url":         cfg.ProxyURL,
		"allowed_paths":     orRoute(t.AllowedPaths, route.AllowedPaths),
		"allowed_methods":   orRoute(t.AllowedMethods, route.AllowedMethods),
		"allowed_actions":   orRoute(t.AllowedActions, route.AllowedActions),
		"num_uses":          t.NumUses,
		"rate_limit":        lim.rate.String(),
		"token_budget":      lim.budget,
		"max_output_tokens": lim.maxOutputTokens,
		"allowed_models":    nonNil(lim.models),
	}, map[string]any{
		internalAccessor:     t.Accessor,
		internalTokenHMAC:    tokenHMAC,
		internalRoute:        name,
		internalMaxExpiresAt: t.MaxExpiresAt.Format(time.RFC3339Nano),
	})
	if g := route.GitHubApp; g != nil { // what the mint narrowed the installation tokens to
		resp.Data["repositories"] = nonNil(orRoute(t.Repositories, g.Repositories))
		resp.Data["permissions"] = orRoutePermissions(t.Permissions, g.Permissions)
	}
	resp.Secret.TTL = ttl
	resp.Secret.MaxTTL = life
	resp.Warnings = warnings
	return resp, nil
}

// mintLifetime returns a new token's ttl and its whole life, renewals
// included. Vault's default policy lets any token renew a lease whose ID it
// knows, and lease IDs are not secret, so the life is fixed here, by the
// minter: the ttl, unless the mint asks for room to renew (max_ttl), never
// more than the route's and the engine's max_ttl.
func (b *backend) mintLifetime(d *framework.FieldData, route *routeEntry, cfg *configEntry) (ttl, life time.Duration, warnings []string, errResp *logical.Response) {
	requested := time.Duration(d.Get("ttl").(int)) * time.Second
	requestedMax := time.Duration(d.Get("max_ttl").(int)) * time.Second
	switch {
	case requested < 0 || requestedMax < 0:
		return 0, 0, nil, logical.ErrorResponse("ttl and max_ttl must not be negative")
	case requested > 0 && requestedMax > 0 && requested > requestedMax:
		return 0, 0, nil, logical.ErrorResponse("ttl (%s) must not exceed max_ttl (%s)", requested, requestedMax)
	}
	ceiling := b.maxTTL(route, cfg)
	ttl = firstPositive(requested, route.TTL, cfg.DefaultTTL)
	if ttl > ceiling {
		warnings = append(warnings, fmt.Sprintf("ttl of %s exceeds the max_ttl of %s; capped", ttl, ceiling))
		ttl = ceiling
	}
	life = firstPositive(requestedMax, ttl)
	if life > ceiling {
		warnings = append(warnings, fmt.Sprintf("max_ttl of %s exceeds the max_ttl of %s allowed here; capped", life, ceiling))
		life = ceiling
	}
	// An explicit max_ttl below the route's default ttl shortens the ttl.
	ttl = min(ttl, life)
	return ttl, life, warnings, nil
}

// narrowScope applies the mint request's scope to t, refusing anything wider
// than the route allows.
func narrowScope(t *tokenEntry, route *routeEntry, d *framework.FieldData) *logical.Response {
	// A narrowing parameter that is present but names nothing (a CI
	// variable that came out empty) is refused: taken as absent, it would
	// silently mint the route's widest token.
	if v, ok := d.GetOk("allowed_paths"); ok {
		paths := cleanList(v.([]string))
		if len(paths) == 0 {
			return emptyNarrowing("allowed_paths", "path pattern")
		}
		if err := scope.NarrowPatterns(paths, route.AllowedPaths); err != nil {
			return logical.ErrorResponse("allowed_paths: %s", err)
		}
		t.AllowedPaths = paths
	}
	if v, ok := d.GetOk("allowed_methods"); ok {
		methods, err := scope.NormalizeMethods(v.([]string))
		if err != nil {
			return logical.ErrorResponse("allowed_methods: %s", err)
		}
		if len(methods) == 0 {
			return emptyNarrowing("allowed_methods", "method")
		}
		for _, m := range methods {
			if !slices.Contains(route.AllowedMethods, m) {
				return logical.ErrorResponse("allowed_methods: %s is wider than the route allows (%v)", m, route.AllowedMethods)
			}
		}
		t.AllowedMethods = methods
	}
	if v, ok := d.GetOk("allowed_actions"); ok {
		actions := cleanList(v.([]string))
		switch {
		case route.AuthType != authAWSSigV4:
			return logical.ErrorResponse("allowed_actions applies only to aws_sigv4 routes")
		case len(actions) == 0:
			return emptyNarrowing("allowed_actions", "action pattern")
		}
		if err := scope.NarrowActions(actions, route.AllowedActions); err != nil {
			return logical.ErrorResponse("allowed_actions: %s", err)
		}
		if err := route.actionsReadable(); err != nil {
			return logical.ErrorResponse(err.Error())
		}
		t.AllowedActions = actions
	}
	if v, ok := d.GetOk("num_uses"); ok {
		n := v.(int)
		switch {
		case n < 0:
			return logical.ErrorResponse("num_uses must not be negative")
		case route.NumUses > 0 && (n == 0 || n > route.NumUses):
			return logical.ErrorResponse("num_uses: the route allows at most %d uses per token", route.NumUses)
		}
		t.NumUses = n
	}
	if v, ok := d.GetOk("bound_cidrs"); ok {
		cidrs, err := scope.ParseCIDRs(v.([]string))
		if err != nil {
			return logical.ErrorResponse("bound_cidrs: %s", err)
		}
		if len(cidrs) == 0 {
			return emptyNarrowing("bound_cidrs", "CIDR block")
		}
		routeCIDRs, _ := scope.ParseCIDRs(route.BoundCIDRs) // validated on write
		if c, wider := scope.WiderPrefix(cidrs, routeCIDRs); wider {
			return logical.ErrorResponse("bound_cidrs: %s is wider than the route allows (%v)", c, route.BoundCIDRs)
		}
		t.BoundCIDRs = scope.PrefixStrings(cidrs)
	}
	if v, ok := d.GetOk("metadata"); ok {
		md := v.(map[string]string)
		if len(md) > maxMetadataPairs {
			return logical.ErrorResponse("metadata: at most %d pairs", maxMetadataPairs)
		}
		for k, val := range md {
			if k == "" || len(k) > maxMetadataKey || len(val) > maxMetadataValue || !httpguts.ValidHeaderFieldValue(k) || !httpguts.ValidHeaderFieldValue(val) {
				return logical.ErrorResponse("metadata: keys must be 1-%d and values at most %d characters, without control characters", maxMetadataKey, maxMetadataValue)
			}
		}
		t.Metadata = md
	}
	return nil
}

func emptyNarrowing(field, what string) *logical.Response {
	return logical.ErrorResponse("%s was given but is empty: name at least one %s, or leave %s out to use the route's", field, what, field)
}

func orRoute(token, route []string) []string {
	if len(token) > 0 {
		return token
	}
	return route
}

const tokenHelp = `
Mints a phantom token for the route: a scoped, short-lived stand-in for the
route's credential, issued as a Vault lease.

  export STRIPE_API_KEY=$(vault read -field=token phantom/token/stripe-customers ttl=1h)

The response carries token, accessor (a non-secret handle for logs and
phantom/tokens/<accessor>), route, expires_at and proxy_url, plus the lease
(lease_id, lease_duration, renewable).

A mint request may narrow the route's scope (allowed_paths, allowed_methods,
bound_cidrs, num_uses) but never widen it: asking for more is an error, and so
is a narrowing parameter given but empty (allowed_paths="" or
allowed_methods=","), which would otherwise mean the route's whole scope.
Metadata labels (for example metadata=agent=triage-bot) are kept with the token.

GitHub App routes: repositories and permissions narrow the token's
installation tokens within the route's (repositories=docs
permissions=contents=read). Each distinct narrowing has its own installation
token, fetched once per expiry and never given to another narrowing's tokens.

Limits narrow the same way: rate_limit (no higher a rate and no larger a
burst than the route's), token_budget (default: the route's, fixed now;
it needs max_output_tokens, the route's or this mint's, also fixed now),
max_output_tokens, allowed_models (each within one of the route's). The
route's current limits apply as well.

Lifetime: ttl (default: the route's ttl, else default_ttl) is how long the
token lives now; max_ttl is how long it may live at most, renewals included,
and is fixed at mint. It defaults to the ttl, so a token is not extended past
the lifetime its minter chose unless the mint asked for room (for example
ttl=1h max_ttl=8h). Both are capped by the route's max_ttl (default: the
engine's, 24h). The response's max_expires_at shows the bound.

Manage the token through its lease:
  vault lease renew <lease_id>                      extend, up to max_expires_at
  vault lease revoke <lease_id>                     dead on its next use
  vault lease revoke -prefix phantom/token/<route>  every token of the route

Renewal: Vault's default policy lets any token renew a lease whose ID it knows
(sys/leases/renew), and lease IDs are not secret. So whoever renews, a renewal
never goes past max_expires_at, and never shortens the token's current life.
`
