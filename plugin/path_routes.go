package plugin

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/locksutil"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/phantomvault/phantom/internal/limits"
	"github.com/phantomvault/phantom/internal/scope"
	"github.com/phantomvault/phantom/internal/token"
)

func (b *backend) pathRoutes() []*framework.Path {
	return []*framework.Path{
		{
			Pattern: "routes/?$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: "phantom",
				OperationSuffix: "routes",
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{
					Callback:     b.pathRoutesList,
					DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "list"},
				},
			},
			HelpSynopsis:    "List the configured routes.",
			HelpDescription: "Lists the names of all routes. Read phantom/routes/<name> for one route's settings.",
		},
		{
			Pattern: "routes/" + framework.GenericNameRegex("name"),
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: "phantom",
				OperationSuffix: "route",
			},
			Fields:         routeFields(),
			ExistenceCheck: b.routeExists,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{
					Callback:     b.pathRouteRead,
					DisplayAttrs: &framework.DisplayAttributes{OperationVerb: "read"},
				},
				logical.CreateOperation: &framework.PathOperation{
					Callback:                    b.pathRouteWrite,
					DisplayAttrs:                &framework.DisplayAttributes{OperationVerb: "create"},
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
				logical.UpdateOperation: &framework.PathOperation{
					Callback:                    b.pathRouteWrite,
					DisplayAttrs:                &framework.DisplayAttributes{OperationVerb: "update"},
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
				logical.DeleteOperation: &framework.PathOperation{
					Callback:                    b.pathRouteDelete,
					DisplayAttrs:                &framework.DisplayAttributes{OperationVerb: "delete"},
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
			},
			HelpSynopsis:    "Manage a route: an upstream API, what tokens may call there, and its real credential.",
			HelpDescription: routeHelp,
		},
	}
}

func routeFields() map[string]*framework.FieldSchema {
	fields := limitFields()
	maps.Copy(fields, awsRouteFields())
	maps.Copy(fields, hmacFields())
	maps.Copy(fields, oauth2Fields())
	maps.Copy(fields, githubAppFields())
	maps.Copy(fields, googleFields())
	maps.Copy(fields, map[string]*framework.FieldSchema{
		"name": {
			Type:        framework.TypeString,
			Description: "Name of the route; tokens are minted at phantom/token/<name>.",
			Required:    true,
		},
		"upstream": {
			Type:        framework.TypeString,
			Description: "Base URL of the upstream API, for example https://api.stripe.com. https is required unless the host is loopback or allow_http is set. Changing it (path prefix included) requires sending credential again.",
		},
		"allow_http": {
			Type:        framework.TypeBool,
			Description: "Allow a plain-http upstream on a non-loopback host. The credential then crosses the network unencrypted. Turning it on requires sending credential again.",
		},
		"allowed_paths": {
			Type:        framework.TypeCommaStringSlice,
			Description: "Path patterns tokens may call, matched exactly against the request path: * is one segment, ** (last segment only) is any rest. Example: /v1/customers/**.",
		},
		"allowed_methods": {
			Type:        framework.TypeCommaStringSlice,
			Description: "HTTP methods tokens may use, for example GET,POST. CONNECT and TRACE are never allowed.",
		},
		"credential": {
			Type:        framework.TypeString,
			Description: "The real API key. Write-only: reads show only its fingerprint. Updating it rotates the key for every live token at once.",
			DisplayAttrs: &framework.DisplayAttributes{
				Name:      "Credential",
				Sensitive: true,
			},
		},
		"auth_type": {
			Type:          framework.TypeString,
			Description:   "How the credential is sent upstream: bearer (Authorization: Bearer), header (auth_header with auth_format), basic (HTTP basic auth of auth_format, default \"{{credential}}:\"), query (auth_query_param), aws_sigv4 (each request signed with AWS Signature V4; see access_key_id), hmac (the engine signs each request with the credential, which never leaves Vault: the hmac_* fields), oauth2_client_credentials / oauth2_refresh_token (the engine gets short-lived access tokens from token_url and the proxy sends them as Bearer; see token_url), github_app (the same with GitHub App installation tokens; see app_id), or google_service_account (the same with a Google service account's access tokens; see service_account_key). Changing it, auth_header, auth_query_param or auth_format requires sending credential again.",
			Default:       authBearer,
			AllowedValues: []any{authBearer, authHeader, authBasic, authQuery, authAWSSigV4, authHMAC, authOAuth2ClientCredentials, authOAuth2RefreshToken, authGitHubApp, authGoogleServiceAccount},
		},
		"auth_header": {
			Type:        framework.TypeString,
			Description: "Header name for auth_type=header, for example x-api-key.",
		},
		"auth_query_param": {
			Type:        framework.TypeString,
			Description: "Query parameter name for auth_type=query, for example key.",
		},
		"auth_format": {
			Type:        framework.TypeString,
			Description: "Value template containing {{credential}}, for example \"Token {{credential}}\" (header) or \"user:{{credential}}\" (basic).",
		},
		"headers": {
			Type:        framework.TypeKVPairs,
			Description: "Static headers added to every upstream request, for example anthropic-version=2023-06-01. A header can pick the backend behind a shared front end, so changing them requires sending credential again.",
		},
		"ttl": {
			Type:        framework.TypeDurationSecond,
			Description: "Default token lifetime for this route. Default: the engine's default_ttl (24h).",
		},
		"max_ttl": {
			Type:        framework.TypeDurationSecond,
			Description: "Longest a token of this route may live, renewals included; a mint may ask for up to this much (max_ttl on phantom/token/<route>). Default: the engine's max_ttl (24h unless configured).",
		},
		"num_uses": {
			Type:        framework.TypeInt,
			Description: "Maximum requests per token; 0 is unlimited. Minting may ask for fewer, never more.",
		},
		"bound_cidrs": {
			Type:        framework.TypeCommaStringSlice,
			Description: "Client addresses (CIDR blocks) tokens may be used from, as seen by phantom-proxy.",
		},
		"token_prefix": {
			Type:        framework.TypeString,
			Description: "Prefix of this route's tokens, for example sk-proj- so SDKs that check key formats accept them. Default: the engine's token_prefix.",
		},
	})
	return fields
}

func (b *backend) routeExists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	r, err := getRoute(ctx, req.Storage, d.Get("name").(string))
	return r != nil, err
}

func (b *backend) pathRoutesList(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	names, err := req.Storage.List(ctx, routePrefix)
	if err != nil {
		return nil, fmt.Errorf("listing routes: %w", err)
	}
	return logical.ListResponse(names), nil
}

func (b *backend) pathRouteRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	r, err := getRoute(ctx, req.Storage, name)
	if err != nil || r == nil {
		return nil, err
	}
	data := r.publicData(name)
	// Totals of every token of the route (in this life of it), flushed
	// ones and what memory holds.
	stored, err := getRouteUsage(ctx, req.Storage, name, r.ID)
	if err != nil {
		return nil, err
	}
	totals := stored.usageTotals
	totals.add(b.usage.pendingForRoute(routeKey{name, r.ID}))
	data["usage"] = totals.data()
	if rr := r.Limits.orNone().RouteRateLimit; rr != nil {
		data["route_rate_limit_remaining"] = b.limiter.Remaining(b.now(), limits.Check{Route: true, Key: r.ID, Rate: rr})
	}
	return &logical.Response{Data: data}, nil
}

// publicData is what reads show of a route: everything but the credential.
func (r *routeEntry) publicData(name string) map[string]any {
	headers := r.Headers
	if headers == nil {
		headers = map[string]string{}
	}
	d := map[string]any{
		"name":                   name,
		"upstream":               r.Upstream,
		"allow_http":             r.AllowHTTP,
		"allowed_paths":          r.AllowedPaths,
		"allowed_methods":        r.AllowedMethods,
		"credential_fingerprint": fingerprint(r.Credential),
		"auth_type":              r.AuthType,
		"auth_header":            r.AuthHeader,
		"auth_query_param":       r.AuthQueryParam,
		"auth_format":            r.AuthFormat,
		"headers":                headers,
		"ttl":                    int64(r.TTL / time.Second),
		"max_ttl":                int64(r.MaxTTL / time.Second),
		"num_uses":               r.NumUses,
		"bound_cidrs":            nonNil(r.BoundCIDRs),
		"token_prefix":           r.TokenPrefix,
		"created_at":             r.CreatedAt.Format(time.RFC3339),
		"updated_at":             r.UpdatedAt.Format(time.RFC3339),
	}
	r.Limits.data(d)
	r.awsPublicData(d)
	r.HMAC.publicData(d)
	r.oauth2PublicData(d)
	r.githubAppPublicData(d)
	r.googlePublicData(d)
	return d
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func (b *backend) pathRouteWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	lock := locksutil.LockForKey(b.routeLocks, name)
	lock.Lock()
	defer lock.Unlock()

	r, err := getRoute(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	now := b.now().UTC()
	var stored *routeEntry // the route before this write; nil on create
	if r == nil {
		id, err := token.NewAccessor(b.rand)
		if err != nil {
			return nil, err
		}
		r = &routeEntry{ID: id, AuthType: authBearer, CreatedAt: now}
	} else {
		before := *r
		stored = &before
	}

	if v, ok := d.GetOk("upstream"); ok {
		r.Upstream = strings.TrimSuffix(strings.TrimSpace(v.(string)), "/")
	}
	if v, ok := d.GetOk("allow_http"); ok {
		r.AllowHTTP = v.(bool)
	}
	if v, ok := d.GetOk("allowed_paths"); ok {
		r.AllowedPaths = cleanList(v.([]string))
	}
	if v, ok := d.GetOk("allowed_methods"); ok {
		methods, err := scope.NormalizeMethods(v.([]string))
		if err != nil {
			return logical.ErrorResponse("allowed_methods: %s", err), nil
		}
		r.AllowedMethods = methods
	}
	_, credentialSent := d.GetOk("credential")
	if credentialSent {
		r.Credential = d.Get("credential").(string)
	}
	if v, ok := d.GetOk("auth_type"); ok && v.(string) != r.AuthType {
		// Settings of the previous injection style would not apply.
		r.AuthType, r.AuthHeader, r.AuthQueryParam, r.AuthFormat = v.(string), "", "", ""
		r.OAuth2, r.GitHubApp, r.Google = nil, nil, nil // another kind's exchange settings start afresh
	}
	// Each kind's own fields (auth_aws.go, auth_oauth2.go, auth_github_app.go,
	// auth_google.go); each reports whether its secrets came with the write.
	for _, set := range []func(*framework.FieldData) (bool, error){r.setAWS, r.setOAuth2, r.setGitHubApp, r.setGoogle} {
		secretSent, err := set(d)
		if err != nil {
			return logical.ErrorResponse(err.Error()), nil
		}
		credentialSent = credentialSent || secretSent
	}
	if v, ok := d.GetOk("auth_header"); ok {
		r.AuthHeader = strings.TrimSpace(v.(string))
	}
	if v, ok := d.GetOk("auth_query_param"); ok {
		r.AuthQueryParam = strings.TrimSpace(v.(string))
	}
	if v, ok := d.GetOk("auth_format"); ok {
		r.AuthFormat = v.(string)
	}
	if v, ok := d.GetOk("headers"); ok {
		r.Headers = v.(map[string]string)
	}
	if v, ok := d.GetOk("ttl"); ok {
		r.TTL = time.Duration(v.(int)) * time.Second
	}
	if v, ok := d.GetOk("max_ttl"); ok {
		r.MaxTTL = time.Duration(v.(int)) * time.Second
	}
	if v, ok := d.GetOk("num_uses"); ok {
		r.NumUses = v.(int)
	}
	if v, ok := d.GetOk("bound_cidrs"); ok {
		cidrs, err := scope.ParseCIDRs(v.([]string))
		if err != nil {
			return logical.ErrorResponse("bound_cidrs: %s", err), nil
		}
		r.BoundCIDRs = scope.PrefixStrings(cidrs)
	}
	if v, ok := d.GetOk("token_prefix"); ok {
		r.TokenPrefix = v.(string)
	}
	if err := r.setLimits(d); err != nil {
		return logical.ErrorResponse(err.Error()), nil
	}
	if err := r.setHMAC(d); err != nil { // auth_hmac.go
		return logical.ErrorResponse(err.Error()), nil
	}

	warnings, err := r.validate()
	if err != nil {
		return logical.ErrorResponse(err.Error()), nil
	}
	if stored != nil && !credentialSent {
		if changed := r.deliveryChanges(stored); len(changed) > 0 {
			secret := r.secretNames()
			return logical.ErrorResponse("changing %s changes where or how the credential is sent: "+
				"send %s again in the same write (the stored key never follows a new destination)",
				strings.Join(changed, ", "), secret), nil
		}
	}
	if err := r.hmacRebind(d, stored); err != nil {
		return logical.ErrorResponse(err.Error()), nil
	}
	cfg, err := getConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	if engineMax := min(cfg.maxTTL(), b.System().MaxLeaseTTL()); max(r.TTL, r.MaxTTL) > engineMax {
		warnings = append(warnings, fmt.Sprintf("tokens are capped at the engine's max_ttl of %s (see config), below this route's ttl or max_ttl", engineMax))
	}
	r.UpdatedAt = now
	if err := putRoute(ctx, req.Storage, name, r); err != nil {
		return nil, err
	}
	if len(warnings) == 0 {
		return nil, nil
	}
	return &logical.Response{Warnings: warnings}, nil
}

func (b *backend) pathRouteDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	lock := locksutil.LockForKey(b.routeLocks, name)
	lock.Lock()
	defer lock.Unlock()

	// Tokens keep the deleted route's ID, which no later route of the same
	// name will have, so they are dead from this moment (route_deleted).
	if err := req.Storage.Delete(ctx, routePrefix+name); err != nil {
		return nil, fmt.Errorf("deleting route %q: %w", name, err)
	}
	if err := req.Storage.Delete(ctx, routeUsagePrefix+name); err != nil {
		return nil, fmt.Errorf("deleting usage of route %q: %w", name, err)
	}
	if err := b.exchanges.forget(ctx, req.Storage, name); err != nil { // exchange.go
		return nil, err
	}
	return nil, nil
}

// cleanList trims entries and drops empty ones.
func cleanList(in []string) []string {
	out := make([]string, 0, len(in))
	for _, s := range in {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
