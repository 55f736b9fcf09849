package plugin

import (
	"context"
	"maps"
	"net/netip"
	"slices"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/locksutil"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/phantomvault/phantom/internal/reqpath"
	"github.com/phantomvault/phantom/internal/token"
)

// Deny reasons that are not token states (see tokenEntry.status for those).
const (
	reasonUnknownToken     = "unknown_token"
	reasonMethodNotAllowed = "method_not_allowed"
	reasonPathNotAllowed   = "path_not_allowed"
	reasonCIDRDenied       = "cidr_denied"
	reasonBadRequest       = "bad_request"
)

func (b *backend) pathResolve() []*framework.Path {
	return []*framework.Path{{
		Pattern: "resolve",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: "phantom",
			OperationSuffix: "token",
		},
		Fields: map[string]*framework.FieldSchema{
			"token": {
				Type:         framework.TypeString,
				Description:  "The phantom token presented by the client.",
				DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
			},
			"method": {
				Type:        framework.TypeString,
				Description: "HTTP method of the request, exactly as it will be forwarded.",
			},
			"path": {
				Type:        framework.TypeString,
				Description: "Request path, exactly the bytes that will be forwarded (no query).",
			},
			"client_ip": {
				Type:        framework.TypeString,
				Description: "Address of the client as seen by the proxy; checked against bound_cidrs.",
			},
			"requests": {
				Type: framework.TypeSlice,
				Description: "Several requests at once, instead of token, method, path and client_ip: " +
					"a list of objects with those fields. The answer's results hold one decision each, in order.",
				DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
			},
		},
		// Callbacks, not Operations: for Operations the framework asks Vault
		// for the replication state on every request, a gRPC round trip that
		// resolve does not need (it never forwards to another node).
		Callbacks: map[logical.Operation]framework.OperationFunc{
			logical.UpdateOperation: b.pathResolveWrite,
			logical.PatchOperation:  b.pathResolveWrite,
		},
		HelpSynopsis:    "Decide whether a phantom token may make a request; if so, return the real credential.",
		HelpDescription: resolveHelp,
	}}
}

// resolveRequest is one request the proxy is about to forward.
type resolveRequest struct {
	method, path string
	clientIP     netip.Addr // invalid when the proxy sent none
}

// deny is a denied answer; it names the token's accessor and route when
// the token is known.
func deny(reason, message string, t *tokenEntry) map[string]any {
	data := map[string]any{"allowed": false, "reason": reason, "message": message}
	if t != nil {
		data["accessor"] = t.Accessor
		data["route"] = t.Route
	}
	return data
}

// maxResolveBatch bounds the requests one resolve call may carry.
const maxResolveBatch = 256

// pathResolveWrite decides one request, or a batch of them. A proxy under
// load batches the requests that queue up while a call is in flight: Vault's
// cost per call (HTTP, token and policy checks, the gRPC hop to the plugin)
// is then shared, while every request still gets its own decision, made
// after it arrived.
func (b *backend) pathResolveWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	raw, batch := d.GetOk("requests")
	if !batch {
		in := resolveInput{
			token:    d.Get("token").(string),
			method:   d.Get("method").(string),
			path:     d.Get("path").(string),
			clientIP: d.Get("client_ip").(string),
		}
		data, err := b.resolve(ctx, req.Storage, in, nil)
		if err != nil {
			return nil, err
		}
		return &logical.Response{Data: data}, nil
	}
	if _, ok := d.GetOk("token"); ok {
		return logical.ErrorResponse("give either token, method, path and client_ip, or requests; not both"), nil
	}
	items := raw.([]any)
	if len(items) > maxResolveBatch {
		return logical.ErrorResponse("at most %d requests per call", maxResolveBatch), nil
	}
	results := make([]map[string]any, len(items))
	snapshot := map[string]*routeEntry{}
	grants := map[string]any{}
	for i, item := range items {
		in, ok := batchInput(item)
		if !ok {
			results[i] = deny(reasonBadRequest, "each request must be an object of string fields", nil)
			continue
		}
		data, err := b.resolve(ctx, req.Storage, in, snapshot)
		if err != nil {
			return nil, err
		}
		if data["allowed"] == true {
			name := data["route"].(string)
			if _, ok := grants[name]; !ok {
				grants[name] = routeGrant(snapshot[name])
			}
		}
		results[i] = data
	}
	return &logical.Response{Data: map[string]any{"results": results, "routes": grants}}, nil
}

// resolveInput is one request as the proxy describes it.
type resolveInput struct {
	token, method, path, clientIP string
}

func batchInput(item any) (resolveInput, bool) {
	m, ok := item.(map[string]any)
	if !ok {
		return resolveInput{}, false
	}
	field := func(k string) (string, bool) {
		v, present := m[k]
		if !present {
			return "", true
		}
		s, ok := v.(string)
		return s, ok
	}
	var in resolveInput
	var ok1, ok2, ok3, ok4 bool
	in.token, ok1 = field("token")
	in.method, ok2 = field("method")
	in.path, ok3 = field("path")
	in.clientIP, ok4 = field("client_ip")
	return in, ok1 && ok2 && ok3 && ok4
}

// resolve decides one request; the answer is always data, an error only
// when storage fails. Alone (routes nil), an allowed answer carries the
// route's grant: upstream, credential and how to inject it. In a batch, the
// routes are read once per call into routes, each allowed answer names its
// route, and the caller sends each route's grant once.
func (b *backend) resolve(ctx context.Context, s logical.Storage, in resolveInput, routes map[string]*routeEntry) (map[string]any, error) {
	rr := resolveRequest{method: in.method, path: in.path}
	switch {
	case in.token == "":
		return deny(reasonBadRequest, "token is required", nil), nil
	case !isToken(rr.method):
		return deny(reasonBadRequest, "method must be an upper-case HTTP method", nil), nil
	}
	if err := reqpath.Validate(rr.path); err != nil {
		return deny(reasonBadRequest, "path "+err.Error(), nil), nil
	}
	if in.clientIP != "" {
		addr, err := netip.ParseAddr(in.clientIP)
		if err != nil {
			return deny(reasonBadRequest, "client_ip is not an IP address", nil), nil
		}
		rr.clientIP = addr.Unmap()
	}
	if token.Check(in.token) != nil {
		return deny(reasonUnknownToken, "not a valid phantom token", nil), nil
	}

	tokenHMAC, err := b.hmacToken(ctx, s, in.token)
	if err != nil {
		return nil, err
	}
	t, err := getTokenShared(ctx, s, tokenHMAC)
	if err != nil {
		return nil, err
	}
	if t != nil && t.NumUses > 0 {
		// Counting uses is a read-modify-write: serialise it per token and
		// decide on a fresh read so the count is exact under concurrency.
		lock := locksutil.LockForKey(b.tokenLocks, tokenHMAC)
		lock.Lock()
		defer lock.Unlock()
		if t, err = getTokenShared(ctx, s, tokenHMAC); err != nil {
			return nil, err
		}
	}
	if t == nil {
		return deny(reasonUnknownToken, "no such token", nil), nil
	}
	route, seen := routes[t.Route]
	if !seen {
		if route, err = getRouteShared(ctx, s, t.Route); err != nil {
			return nil, err
		}
		if routes != nil {
			routes[t.Route] = route
		}
	}
	now := b.now().UTC()
	if reason, msg := authorize(t, route, rr, now); reason != "" {
		return deny(reason, msg, t), nil
	}
	if t.NumUses > 0 {
		t.Uses++
		if err := putToken(ctx, s, tokenHMAC, t); err != nil {
			return nil, err
		}
	}
	b.usage.record(tokenHMAC, now)
	data := allow(t)
	if routes == nil {
		maps.Copy(data, routeGrant(route))
	}
	return data, nil
}

// authorize returns "" when t may make the request, else a deny reason and a
// message for humans.
func authorize(t *tokenEntry, route *routeEntry, rr resolveRequest, now time.Time) (reason, message string) {
	switch st := t.status(now, route); st {
	case statusActive:
	case statusExpired:
		return st, "token expired at " + t.ExpiresAt.Format(time.RFC3339)
	case statusRevoked:
		return st, "token was revoked"
	case statusRouteDeleted:
		return st, "the token's route was deleted"
	case statusExhausted:
		return st, "token has used all of its num_uses"
	default:
		return st, "token is not active"
	}
	for _, cidrs := range [][]string{route.BoundCIDRs, t.BoundCIDRs} {
		if len(cidrs) == 0 {
			continue
		}
		prefixes, err := parseCIDRs(cidrs)
		if err != nil || !rr.clientIP.IsValid() || !containsAddr(prefixes, rr.clientIP) {
			return reasonCIDRDenied, "client address is not in the token's bound_cidrs"
		}
	}
	if !slices.Contains(route.AllowedMethods, rr.method) ||
		len(t.AllowedMethods) > 0 && !slices.Contains(t.AllowedMethods, rr.method) {
		return reasonMethodNotAllowed, "method " + rr.method + " is not allowed for this token"
	}
	if !matchAny(route.AllowedPaths, rr.path) ||
		len(t.AllowedPaths) > 0 && !matchAny(t.AllowedPaths, rr.path) {
		return reasonPathNotAllowed, "path is not allowed for this token"
	}
	return "", ""
}

// allow is an allowed answer for t, without its route's grant.
func allow(t *tokenEntry) map[string]any {
	data := map[string]any{
		"allowed":    true,
		"route":      t.Route,
		"accessor":   t.Accessor,
		"expires_at": t.ExpiresAt.Format(time.RFC3339),
	}
	if t.NumUses > 0 {
		data["uses_remaining"] = t.NumUses - t.Uses
	}
	return data
}

// routeGrant is what the proxy needs of a route to forward a request.
func routeGrant(route *routeEntry) map[string]any {
	name, format := route.injection()
	headers := route.Headers
	if headers == nil {
		headers = map[string]string{}
	}
	return map[string]any{
		"upstream":    route.Upstream,
		"credential":  route.Credential,
		"auth_type":   route.AuthType,
		"auth_name":   name,
		"auth_format": format,
		"headers":     headers,
	}
}

const resolveHelp = `
phantom-proxy calls this for every request: may this token make this request?

Input: token, method, path (exactly the bytes that will be forwarded, without
the query) and client_ip. Or requests, a list of up to 256 objects with those
fields, answered by results, the decisions in the same order, and routes, the
grant (upstream through headers below) of each route allowed, once; a batch
reads each route once. phantom-proxy calls with PATCH (an update needs an
extra round trip to the plugin) and batches the requests that queue up while
a call is in flight. The answer is always data, never an error:

  allowed=true   route, accessor, upstream, credential, auth_type, auth_name
                 (header or query parameter), auth_format (a template around
                 {{credential}}), headers (static upstream headers), expires_at
  allowed=false  reason, one of: unknown_token, expired, revoked,
                 route_deleted, uses_exhausted, cidr_denied,
                 method_not_allowed, path_not_allowed, bad_request;
                 message; accessor and route when the token is known

Resolve writes storage only for tokens with num_uses, whose count is exact
under any concurrency; other usage counters are kept in memory and flushed
periodically. Grant this path only to the proxy's policy: it returns the real
credential. Vault's audit devices HMAC every field.
`
