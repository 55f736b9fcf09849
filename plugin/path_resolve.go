package plugin

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/locksutil"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/internal/scope"
)

func (b *backend) pathResolve() []*framework.Path {
	return []*framework.Path{{
		Pattern: "resolve",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: "phantom",
			OperationSuffix: "token",
		},
		Fields: map[string]*framework.FieldSchema{
			resolve.FieldToken: {
				Type:         framework.TypeString,
				Description:  "The phantom token presented by the client.",
				DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
			},
			resolve.FieldMethod: {
				Type:        framework.TypeString,
				Description: "HTTP method of the request, exactly as it will be forwarded: upper-case letters only.",
			},
			resolve.FieldPath: {
				Type:        framework.TypeString,
				Description: "Request path, exactly the bytes that will be forwarded (no query).",
			},
			resolve.FieldClientIP: {
				Type:        framework.TypeString,
				Description: "Address of the client as seen by the proxy; checked against bound_cidrs.",
			},
			resolve.FieldHMAC: hmacResolveField(), // hmac_sign.go
			resolve.FieldRequests: {
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
		HelpDescription: resolveHelp(),
	}}
}

// resolveRequest is one request the proxy is about to forward, checked.
type resolveRequest struct {
	method, path string
	clientIP     netip.Addr         // invalid when the proxy sent none
	hmac         *resolve.HMACInput // auth_type=hmac (hmac_sign.go)
}

// deny is a denied answer; it names the token's accessor and route when
// the token is known.
func deny(reason, message string, t *tokenEntry) *resolve.Answer {
	a := resolve.Deny(reason, message)
	if t != nil {
		a.Accessor, a.Route = t.Accessor, t.Route
	}
	return a
}

// pathResolveWrite decides one request, or a batch of them. A proxy under
// load batches the requests that queue up while a call is in flight: Vault's
// cost per call (HTTP, token and policy checks, the gRPC hop to the plugin)
// is then shared, while every request still gets its own decision, made
// after it arrived.
func (b *backend) pathResolveWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	raw, batch := d.GetOk(resolve.FieldRequests)
	if !batch {
		in := resolve.Request{
			Token:    d.Get(resolve.FieldToken).(string),
			Method:   d.Get(resolve.FieldMethod).(string),
			Path:     d.Get(resolve.FieldPath).(string),
			ClientIP: d.Get(resolve.FieldClientIP).(string),
		}
		var ok bool
		if in.HMAC, ok = hmacInput(d.Raw[resolve.FieldHMAC]); !ok {
			return &logical.Response{Data: deny(resolve.ReasonBadRequest, "hmac must be an object of string fields", nil).Data()}, nil
		}
		a, route, err := b.resolveOne(ctx, req.Storage, in)
		if err != nil {
			return nil, err
		}
		if route != nil {
			a.RouteGrant = routeGrant(route)
		}
		return &logical.Response{Data: a.Data()}, nil
	}
	if _, ok := d.GetOk(resolve.FieldToken); ok {
		return logical.ErrorResponse("give either token, method, path and client_ip, or requests; not both"), nil
	}
	items := raw.([]any)
	if len(items) > resolve.MaxBatch {
		return logical.ErrorResponse("at most %d requests per call", resolve.MaxBatch), nil
	}
	out := resolve.BatchAnswer{Results: make([]*resolve.Answer, len(items)), Routes: map[string]*resolve.RouteGrant{}}
	snapshot := map[string]*routeEntry{}
	for i, item := range items {
		in, ok := batchInput(item)
		if !ok {
			out.Results[i] = deny(resolve.ReasonBadRequest, "each request must be an object of string fields", nil)
			continue
		}
		a, route, err := b.resolveInBatch(ctx, req.Storage, in, snapshot)
		if err != nil {
			// No answer of this batch reaches the proxy, so none is settled.
			b.usage.cancelAnswered(out.Results[:i])
			return nil, err
		}
		if route != nil {
			if _, ok := out.Routes[a.Route]; !ok {
				out.Routes[a.Route] = routeGrant(route)
			}
		}
		out.Results[i] = a
	}
	return &logical.Response{Data: out.Data()}, nil
}

// batchInput reads one request of a batch, as Vault decoded it from JSON.
func batchInput(item any) (resolve.Request, bool) {
	m, ok := item.(map[string]any)
	if !ok {
		return resolve.Request{}, false
	}
	field := func(k string) (string, bool) {
		v, present := m[k]
		if !present {
			return "", true
		}
		s, ok := v.(string)
		return s, ok
	}
	var in resolve.Request
	var ok1, ok2, ok3, ok4, ok5 bool
	in.Token, ok1 = field(resolve.FieldToken)
	in.Method, ok2 = field(resolve.FieldMethod)
	in.Path, ok3 = field(resolve.FieldPath)
	in.ClientIP, ok4 = field(resolve.FieldClientIP)
	in.HMAC, ok5 = hmacInput(m[resolve.FieldHMAC])
	return in, ok1 && ok2 && ok3 && ok4 && ok5
}

// resolveOne decides a single request; the answer is always data, an error
// only when storage fails. An allowed answer comes with the route it was
// allowed on, whose grant the caller sends in the answer.
func (b *backend) resolveOne(ctx context.Context, s logical.Storage, in resolve.Request) (*resolve.Answer, *routeEntry, error) {
	h, denied, err := b.holdToken(ctx, s, in)
	defer h.release()
	if denied != nil || err != nil {
		return denied, nil, err
	}
	route, err := getRouteShared(ctx, s, h.entry.Route)
	if err != nil {
		return nil, nil, err
	}
	return b.decide(ctx, s, h, route)
}

// resolveInBatch is resolveOne for one request of a batch: each route is
// read once per call, into routes, and the caller sends each route's grant
// once.
func (b *backend) resolveInBatch(ctx context.Context, s logical.Storage, in resolve.Request, routes map[string]*routeEntry) (*resolve.Answer, *routeEntry, error) {
	h, denied, err := b.holdToken(ctx, s, in)
	defer h.release()
	if denied != nil || err != nil {
		return denied, nil, err
	}
	route, seen := routes[h.entry.Route]
	if !seen {
		if route, err = getRouteShared(ctx, s, h.entry.Route); err != nil {
			return nil, nil, err
		}
		routes[h.entry.Route] = route
	}
	return b.decide(ctx, s, h, route)
}

// heldToken is a checked request with its token's record. For a token with
// num_uses the token's lock is held until release: counting uses is a
// read-modify-write, serialised per token and decided on a fresh read so the
// count is exact under concurrency.
type heldToken struct {
	req       resolveRequest
	entry     *tokenEntry
	tokenHMAC string
	lock      *locksutil.LockEntry // nil unless held
}

func (h heldToken) release() {
	if h.lock != nil {
		h.lock.Unlock()
	}
}

// holdToken checks a request and reads its token's record, or returns the
// denial. The caller releases the result in every case.
func (b *backend) holdToken(ctx context.Context, s logical.Storage, in resolve.Request) (heldToken, *resolve.Answer, error) {
	clientIP, reason, msg := in.Check()
	if reason != "" {
		return heldToken{}, deny(reason, msg, nil), nil
	}
	h := heldToken{req: resolveRequest{method: in.Method, path: in.Path, clientIP: clientIP, hmac: in.HMAC}}
	var err error
	if h.tokenHMAC, err = b.hmacToken(ctx, s, in.Token); err != nil {
		return h, nil, err
	}
	if h.entry, err = getTokenShared(ctx, s, h.tokenHMAC); err != nil {
		return h, nil, err
	}
	if h.entry != nil && h.entry.NumUses > 0 {
		h.lock = locksutil.LockForKey(b.tokenLocks, h.tokenHMAC)
		h.lock.Lock()
		if h.entry, err = getTokenShared(ctx, s, h.tokenHMAC); err != nil {
			return h, nil, err
		}
	}
	if h.entry == nil {
		return h, deny(resolve.ReasonUnknownToken, "no such token", nil), nil
	}
	return h, nil, nil
}

// decide authorizes h's request on route (nil when deleted) and counts the
// use.
func (b *backend) decide(ctx context.Context, s logical.Storage, h heldToken, route *routeEntry) (*resolve.Answer, *routeEntry, error) {
	t := h.entry
	now := b.now().UTC()
	if reason, msg := authorize(t, route, h.req, now); reason != "" {
		return deny(reason, msg, t), nil, nil
	}
	var signature *resolve.HMACSignature
	if route.AuthType == authHMAC { // before any use or rate is counted
		var denied *resolve.Answer
		if signature, denied = route.signHMAC(h.req, now, t); denied != nil {
			return denied, nil, nil
		}
	}
	var limits *resolve.Limits
	if t.Limits.any() || route.Limits.any() { // tokens and routes without limits pay nothing
		var denied *resolve.Answer
		if limits, denied = b.checkLimits(h, route, now); denied != nil {
			return denied, nil, nil
		}
	}
	// A use is counted only once every limit allowed the request: a 429
	// must not burn one.
	if t.NumUses > 0 {
		t.Uses++
		if err := putToken(ctx, s, h.tokenHMAC, t); err != nil {
			b.usage.cancelReserved(h.tokenHMAC, limits) // the proxy never gets this answer
			return nil, nil, err
		}
	}
	b.usage.record(h.tokenHMAC, t, now)
	a := allow(t)
	a.Limits = limits
	a.HMACSignature = signature
	return a, route, nil
}

// authorize returns "" when t may make the request, else a deny reason and a
// message for humans. A token's status is its deny reason.
func authorize(t *tokenEntry, route *routeEntry, rr resolveRequest, now time.Time) (reason, message string) {
	if reason, message := usable(t, route, rr.clientIP, now); reason != "" {
		return reason, message
	}
	if !slices.Contains(route.AllowedMethods, rr.method) ||
		len(t.AllowedMethods) > 0 && !slices.Contains(t.AllowedMethods, rr.method) {
		return resolve.ReasonMethodNotAllowed, "method " + rr.method + " is not allowed for this token"
	}
	if !scope.MatchAny(route.AllowedPaths, rr.path) ||
		len(t.AllowedPaths) > 0 && !scope.MatchAny(t.AllowedPaths, rr.path) {
		return resolve.ReasonPathNotAllowed, "path is not allowed for this token"
	}
	return "", ""
}

// usable returns "" when t is live on route (nil when deleted) and may be
// used from clientIP (invalid: not known), else a deny reason and a message:
// what authorize checks before the request's method and path, and all that
// the tunnel call checks of a token.
func usable(t *tokenEntry, route *routeEntry, clientIP netip.Addr, now time.Time) (reason, message string) {
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
	if !route.cidrs().Allows(clientIP) || !t.cidrs().Allows(clientIP) {
		return resolve.ReasonCIDRDenied, "client address is not in the token's bound_cidrs"
	}
	return "", ""
}

// allow is an allowed answer for t, without its route's grant.
func allow(t *tokenEntry) *resolve.Answer {
	a := resolve.Allow(t.Route, t.Accessor, t.ExpiresAt)
	if t.NumUses > 0 {
		a.UsesRemaining = new(t.NumUses - t.Uses)
	}
	return a
}

// routeGrant is what the proxy needs of a route to forward a request.
func routeGrant(route *routeEntry) *resolve.RouteGrant {
	if route.AuthType == authHMAC {
		return route.hmacRouteGrant() // no credential
	}
	name, format := route.injection()
	return &resolve.RouteGrant{
		Upstream:   route.Upstream,
		Credential: route.Credential,
		AuthType:   route.AuthType,
		AuthName:   name,
		AuthFormat: format,
		Headers:    route.Headers,
	}
}

// resolveHelp is the path's help, written from the contract's definitions
// (internal/resolve): field names, batch size, placeholder, auth types and
// deny reasons. The answer's fields are resolve.Answer and resolve.RouteGrant.
func resolveHelp() string {
	input := fmt.Sprintf("Input: %s, %s (upper-case letters only), %s (exactly the bytes that will be "+
		"forwarded, without the query), %s and, for a route of auth_type %s, %s (query, body or body_sha256: "+
		"what the signature covers that only the proxy knows). Or %s, a list of up to %d objects with those fields, "+
		"answered by results, the decisions in the same order, and routes, the grant (upstream through "+
		"headers below) of each route allowed, once; a batch reads each route once. phantom-proxy calls "+
		"with PATCH (an update needs an extra round trip to the plugin) and batches the requests that "+
		"queue up while a call is in flight. The answer is always data, never an error:",
		resolve.FieldToken, resolve.FieldMethod, resolve.FieldPath, resolve.FieldClientIP, resolve.AuthHMAC, resolve.FieldHMAC,
		resolve.FieldRequests, resolve.MaxBatch)
	allowed := fmt.Sprintf("route, accessor, upstream, credential, auth_type (%s), auth_name (header "+
		"or query parameter), auth_format (a template around %s), headers (static upstream headers), "+
		"expires_at, uses_remaining (tokens with num_uses), limits (usage_format, allowed_models, "+
		"max_output_tokens, budget_remaining: what the proxy enforces on this request, when any apply); "+
		"for auth_type %s no credential but hmac (where the signature, timestamp, key id and passphrase go) and "+
		"hmac_signature (this request's timestamp and signature, never shared by a batch)",
		strings.Join([]string{resolve.AuthBearer, resolve.AuthHeader, resolve.AuthBasic, resolve.AuthQuery, resolve.AuthHMAC}, ", "),
		resolve.Placeholder, resolve.AuthHMAC)
	denied := "reason, one of: " + strings.Join(resolve.Reasons(), ", ") +
		"; message; accessor and route when the token is known; retry_after_ms with rate_limited and budget_pending; " +
		"hmac_needs with " + resolve.ReasonHMACInputs + " (what of the body to send with hmac, and at most how much)"
	indent := "\n" + strings.Repeat(" ", 17)
	return "phantom-proxy calls this for every request: may this token make this request?\n\n" +
		wrapWords(input, 78, "\n") + "\n\n" +
		"  allowed=true   " + wrapWords(allowed, 61, indent) + "\n" +
		"  allowed=false  " + wrapWords(denied, 61, indent) + "\n\n" +
		wrapWords("Resolve writes storage only for tokens with num_uses, whose count is exact under any "+
			"concurrency; other usage counters are kept in memory and flushed periodically. Grant this "+
			"path only to the proxy's policy: it returns the real credential. Vault's audit devices HMAC "+
			"every field.", 78, "\n")
}

// wrapWords breaks s at spaces into lines of at most width bytes, joined by sep.
func wrapWords(s string, width int, sep string) string {
	var lines []string
	line := ""
	for word := range strings.FieldsSeq(s) {
		if line != "" && len(line)+1+len(word) > width {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += word
	}
	return strings.Join(append(lines, line), sep)
}
