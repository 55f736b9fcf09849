package plugin

import (
	"context"
	"errors"
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
			resolve.FieldAction: {
				Type:        framework.TypeString,
				Description: "The API operations of a request to a signed route, as <service>:<Operation> (s3:GetObject), several after commas when its headers do more (s3:PutObject,s3:PutObjectAcl); each is checked against allowed_actions.",
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
	action       string             // "" when the proxy could not tell, or the route is not signed
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
	ctx = b.exchanges.withExchangeBudget(ctx) // exchange.go
	raw, batch := d.GetOk(resolve.FieldRequests)
	if !batch {
		in := resolve.Request{
			Token:    d.Get(resolve.FieldToken).(string),
			Method:   d.Get(resolve.FieldMethod).(string),
			Path:     d.Get(resolve.FieldPath).(string),
			ClientIP: d.Get(resolve.FieldClientIP).(string),
			Action:   d.Get(resolve.FieldAction).(string),
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
			a.RouteGrant = routeGrant(route, b.now())
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
		switch {
		case route == nil:
		case route.exchangeVariant() != "": // a token's own narrowed access token
			a.RouteGrant = routeGrant(route, b.now())
		case out.Routes[a.Route] == nil:
			out.Routes[a.Route] = routeGrant(route, b.now())
		}
		out.Results[i] = a
	}
	out.InlineShared()
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
	var ok1, ok2, ok3, ok4, ok5, ok6 bool
	in.Token, ok1 = field(resolve.FieldToken)
	in.Method, ok2 = field(resolve.FieldMethod)
	in.Path, ok3 = field(resolve.FieldPath)
	in.ClientIP, ok4 = field(resolve.FieldClientIP)
	in.Action, ok5 = field(resolve.FieldAction)
	in.HMAC, ok6 = hmacInput(m[resolve.FieldHMAC])
	return in, ok1 && ok2 && ok3 && ok4 && ok5 && ok6
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
	h := heldToken{req: resolveRequest{method: in.Method, path: in.Path, action: in.Action, clientIP: clientIP, hmac: in.HMAC}}
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
	// A token's narrowing of the exchange makes route a copy: its grant is the token's alone.
	route, err := route.narrowedFor(t) // github_app_narrow.go
	if err != nil {
		return deny(resolve.ReasonPathNotAllowed, err.Error(), t), nil, nil
	}
	if _, ok := exchangers[route.AuthType]; ok { // before any use or rate is counted
		tok, err := b.exchanges.accessToken(ctx, s, t.Route, route) // exchange.go
		var failed *errExchange
		switch {
		case errors.As(err, &failed):
			return deny(resolve.ReasonCredentialExchange, failed.Error(), t), nil, nil
		case err != nil: // storage, or a standby's logical.ErrReadOnly (Vault forwards the resolve)
			return nil, nil, err
		}
		route.accessToken = tok // the resolve's own copy of the route
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
	if route.AuthType == authGitHubApp && revokesInstallationToken(rr.method, rr.path) { // auth_github_app.go
		return resolve.ReasonPathNotAllowed, "revoking the installation token the route's tokens share is never allowed"
	}
	if len(route.AllowedActions) > 0 || len(t.AllowedActions) > 0 {
		if route.AWS == nil || route.actionsReadable() != nil { // the route changed since the mint
			return resolve.ReasonActionNotAllowed, "this route's API operations cannot be told apart"
		}
		// Every operation the request performs ("s3:PutObject,s3:PutObjectAcl").
		for action := range strings.SplitSeq(rr.action, ",") {
			if action == "" || len(route.AllowedActions) > 0 && !scope.MatchAnyAction(route.AllowedActions, action) ||
				len(t.AllowedActions) > 0 && !scope.MatchAnyAction(t.AllowedActions, action) {
				return resolve.ReasonActionNotAllowed, "the API operation " + orUnknown(action) + " is not allowed for this token"
			}
		}
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

func orUnknown(action string) string {
	if action == "" {
		return "(which the proxy could not tell)"
	}
	return action
}
