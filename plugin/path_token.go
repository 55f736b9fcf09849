package plugin

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

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
	return []*framework.Path{{
		Pattern: "token/" + framework.GenericNameRegex("route"),
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: "phantom",
			OperationSuffix: "token",
		},
		Fields: map[string]*framework.FieldSchema{
			"route": {
				Type:        framework.TypeString,
				Description: "Name of the route to mint a token for.",
				Required:    true,
			},
			"ttl": {
				Type:        framework.TypeDurationSecond,
				Description: "Token lifetime, for example 1h. Default: the route's ttl, else the engine's default_ttl (24h). Capped at max_ttl.",
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
			"bound_cidrs": {
				Type:        framework.TypeCommaStringSlice,
				Description: "Client addresses (CIDR blocks) the token may be used from; within the route's bound_cidrs when it sets any.",
			},
			"metadata": {
				Type:        framework.TypeKVPairs,
				Description: "Labels kept with the token and shown on phantom/tokens/<accessor>, for example agent=triage-bot.",
			},
		},
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

	requested := time.Duration(d.Get("ttl").(int)) * time.Second
	if requested < 0 {
		return logical.ErrorResponse("ttl must not be negative"), nil
	}
	ttl := firstPositive(requested, route.TTL, cfg.DefaultTTL)
	maxTTL := b.maxTTL(route, cfg)
	var warnings []string
	if ttl > maxTTL {
		warnings = append(warnings, fmt.Sprintf("ttl of %s exceeds the max_ttl of %s; capped", ttl, maxTTL))
		ttl = maxTTL
	}
	t.ExpiresAt = now.Add(ttl)

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
	index, err := logical.StorageEntryJSON(accessorPrefix+t.Accessor, accessorEntry{TokenHMAC: tokenHMAC})
	if err != nil {
		return nil, err
	}
	if err := req.Storage.Put(ctx, index); err != nil {
		return nil, fmt.Errorf("writing accessor %s: %w", t.Accessor, err)
	}

	resp := b.Secret(secretTokenType).Response(map[string]any{
		"token":           tok,
		"accessor":        t.Accessor,
		"route":           name,
		"expires_at":      t.ExpiresAt.Format(time.RFC3339),
		"proxy_url":       cfg.ProxyURL,
		"allowed_paths":   orRoute(t.AllowedPaths, route.AllowedPaths),
		"allowed_methods": orRoute(t.AllowedMethods, route.AllowedMethods),
		"num_uses":        t.NumUses,
	}, map[string]any{
		internalAccessor:  t.Accessor,
		internalTokenHMAC: tokenHMAC,
		internalRoute:     name,
	})
	resp.Secret.TTL = ttl
	resp.Secret.MaxTTL = maxTTL
	resp.Warnings = warnings
	return resp, nil
}

// narrowScope applies the mint request's scope to t, refusing anything wider
// than the route allows.
func narrowScope(t *tokenEntry, route *routeEntry, d *framework.FieldData) *logical.Response {
	if v, ok := d.GetOk("allowed_paths"); ok {
		paths := cleanList(v.([]string))
		if err := narrowPatterns(paths, route.AllowedPaths); err != nil {
			return logical.ErrorResponse("allowed_paths: %s", err)
		}
		t.AllowedPaths = paths
	}
	if v, ok := d.GetOk("allowed_methods"); ok {
		methods, err := normalizeMethods(v.([]string))
		if err != nil {
			return logical.ErrorResponse("allowed_methods: %s", err)
		}
		for _, m := range methods {
			if !slices.Contains(route.AllowedMethods, m) {
				return logical.ErrorResponse("allowed_methods: %s is wider than the route allows (%v)", m, route.AllowedMethods)
			}
		}
		t.AllowedMethods = methods
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
		cidrs, err := parseCIDRs(v.([]string))
		if err != nil {
			return logical.ErrorResponse("bound_cidrs: %s", err)
		}
		routeCIDRs, _ := parseCIDRs(route.BoundCIDRs) // validated on write
		for _, c := range cidrs {
			if len(routeCIDRs) > 0 && !slices.ContainsFunc(routeCIDRs, func(w netip.Prefix) bool { return prefixWithin(c, w) }) {
				return logical.ErrorResponse("bound_cidrs: %s is wider than the route allows (%v)", c, route.BoundCIDRs)
			}
		}
		t.BoundCIDRs = prefixStrings(cidrs)
	}
	if v, ok := d.GetOk("metadata"); ok {
		md := v.(map[string]string)
		if len(md) > maxMetadataPairs {
			return logical.ErrorResponse("metadata: at most %d pairs", maxMetadataPairs)
		}
		for k, val := range md {
			if k == "" || len(k) > maxMetadataKey || len(val) > maxMetadataValue || !validHeaderValue(k) || !validHeaderValue(val) {
				return logical.ErrorResponse("metadata: keys must be 1-%d and values at most %d characters, without control characters", maxMetadataKey, maxMetadataValue)
			}
		}
		t.Metadata = md
	}
	return nil
}

// maxTTL is the longest a token of route may live: the smallest of the
// route's, the engine's and the mount's maximums.
func (b *backend) maxTTL(route *routeEntry, cfg *configEntry) time.Duration {
	m := b.System().MaxLeaseTTL()
	for _, d := range []time.Duration{route.MaxTTL, cfg.MaxTTL} {
		if d > 0 && d < m {
			m = d
		}
	}
	return m
}

func firstPositive(ds ...time.Duration) time.Duration {
	for _, d := range ds {
		if d > 0 {
			return d
		}
	}
	return 0
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
bound_cidrs, num_uses) but never widen it: asking for more is an error.
Metadata labels (for example metadata=agent=triage-bot) are kept with the token.

Manage the token through its lease:
  vault lease renew <lease_id>                      extend within max_ttl
  vault lease revoke <lease_id>                     dead on its next use
  vault lease revoke -prefix phantom/token/<route>  every token of the route
`
