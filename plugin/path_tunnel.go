package plugin

import (
	"context"
	"net/netip"
	"strings"
	"sync"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/phantomvault/phantom/internal/origin"
	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/internal/token"
)

func (b *backend) pathTunnel() []*framework.Path {
	return []*framework.Path{{
		Pattern: "tunnel",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: "phantom",
			OperationSuffix: "tunnel",
		},
		Fields: map[string]*framework.FieldSchema{
			resolve.FieldOrigin: {
				Type:        framework.TypeString,
				Description: `The CONNECT target, "host:port" with a lower-case host and an explicit port.`,
			},
			resolve.FieldToken: {
				Type:         framework.TypeString,
				Description:  "The CONNECT's proxy credentials, if any: a phantom token.",
				DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
			},
			resolve.FieldClientIP: {
				Type:        framework.TypeString,
				Description: "Address of the client as seen by the proxy; checked against the token's bound_cidrs.",
			},
		},
		// Callbacks, as for resolve: the proxy calls with PATCH, sparing
		// the existence check, and the answer is computed in memory.
		Callbacks: map[logical.Operation]framework.OperationFunc{
			logical.UpdateOperation: b.pathTunnelWrite,
			logical.PatchOperation:  b.pathTunnelWrite,
		},
		HelpSynopsis:    "Decide whether phantom-proxy may open a forward-proxy tunnel to an origin (phantom-proxy's call at CONNECT).",
		HelpDescription: tunnelHelp,
	}}
}

// pathTunnelWrite answers a CONNECT. It only reads: no use, request, usage
// or rate-limit slot is counted, since each request inside the tunnel is
// resolved and counted on its own.
func (b *backend) pathTunnelWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	in := resolve.TunnelRequest{
		Origin:   d.Get(resolve.FieldOrigin).(string),
		Token:    d.Get(resolve.FieldToken).(string),
		ClientIP: d.Get(resolve.FieldClientIP).(string),
	}
	a, err := b.checkTunnel(ctx, req.Storage, in)
	if err != nil {
		return nil, err
	}
	return &logical.Response{Data: a.Data()}, nil
}

func tunnelDeny(reason, message string, t *tokenEntry) *resolve.TunnelAnswer {
	a := &resolve.TunnelAnswer{Allowed: new(false), Reason: reason, Message: message}
	if t != nil {
		a.Route, a.Accessor = t.Route, t.Accessor
	}
	return a
}

// checkTunnel decides a TunnelRequest; an error only when storage fails.
func (b *backend) checkTunnel(ctx context.Context, s logical.Storage, in resolve.TunnelRequest) (*resolve.TunnelAnswer, error) {
	o, err := origin.ParseCanonical(in.Origin)
	if err != nil {
		return tunnelDeny(resolve.ReasonBadRequest, "origin: "+err.Error(), nil), nil
	}
	want := o.String()
	var clientIP netip.Addr
	if in.ClientIP != "" {
		addr, err := netip.ParseAddr(in.ClientIP)
		if err != nil {
			return tunnelDeny(resolve.ReasonBadRequest, "client_ip is not an IP address", nil), nil
		}
		clientIP = addr.Unmap()
	}
	if in.Token == "" {
		named, err := b.tunnelOrigins.names(ctx, s, b.cache, want)
		if err != nil {
			return nil, err
		}
		if !named {
			// Says nothing of which origins routes name.
			return tunnelDeny(resolve.ReasonOriginNotAllowed, "no route leads to this origin", nil), nil
		}
		return &resolve.TunnelAnswer{Allowed: new(true)}, nil
	}
	if token.Check(in.Token) != nil {
		return tunnelDeny(resolve.ReasonUnknownToken, "not a valid phantom token", nil), nil
	}
	tokenHMAC, err := b.hmacToken(ctx, s, in.Token)
	if err != nil {
		return nil, err
	}
	// No token lock: nothing is written, and a num_uses count read a
	// moment early or late only moves which request, inside the tunnel,
	// resolve refuses as uses_exhausted (resolve counts under the lock).
	t, err := getTokenShared(ctx, s, tokenHMAC)
	if err != nil {
		return nil, err
	}
	if t == nil {
		return tunnelDeny(resolve.ReasonUnknownToken, "no such token", nil), nil
	}
	route, err := getRouteShared(ctx, s, t.Route)
	if err != nil {
		return nil, err
	}
	if reason, msg := usable(t, route, clientIP, b.now().UTC()); reason != "" {
		return tunnelDeny(reason, msg, t), nil
	}
	if e := effective(t, route); e.budget > 0 &&
		(e.usageFormat == resolve.UsageNone || b.usage.spent(tokenHMAC, t) >= e.budget) {
		// Dead as resolve judges it (checkLimits): spent, or no longer
		// enforceable once the route lost its usage_format. Budget held by
		// requests in flight is not counted: it frees up as they settle.
		return tunnelDeny(resolve.ReasonBudgetExhausted, "token has spent its LLM token budget", t), nil
	}
	if ro, ok := origin.OfUpstream(route.Upstream); !ok || ro.String() != want {
		return tunnelDeny(resolve.ReasonOriginNotAllowed, "the token's route does not lead to this origin (https, no base path)", t), nil
	}
	return &resolve.TunnelAnswer{Allowed: new(true), Route: t.Route, Accessor: t.Accessor}, nil
}

// tunnelOrigins is the set of the origins this mount's routes lead to
// (https, no base path), built from storage on first use and again after
// any route changed (storageCache.routeWrites: writes here, invalidations
// from other nodes), so a CONNECT without a token costs no storage read.
type tunnelOrigins struct {
	mu    sync.Mutex
	built bool
	gen   uint64 // routeWrites when set was built
	set   map[string]struct{}
}

// names reports whether some current route leads to o (canonical).
func (to *tunnelOrigins) names(ctx context.Context, s logical.Storage, c *storageCache, o string) (bool, error) {
	to.mu.Lock()
	defer to.mu.Unlock()
	gen := c.routeWrites.Load()
	if !to.built || to.gen != gen {
		set, err := readTunnelOrigins(ctx, s)
		if err != nil {
			return false, err
		}
		// Built from reads that began after gen was loaded: a route
		// written meanwhile moves routeWrites on, and the next call
		// builds again.
		to.set, to.gen, to.built = set, gen, true
	}
	_, ok := to.set[o]
	return ok, nil
}

func readTunnelOrigins(ctx context.Context, s logical.Storage) (map[string]struct{}, error) {
	names, err := s.List(ctx, routePrefix)
	if err != nil {
		return nil, err
	}
	set := make(map[string]struct{}, len(names))
	for _, name := range names {
		if strings.HasSuffix(name, "/") {
			continue
		}
		r, err := getRouteShared(ctx, s, name)
		if err != nil {
			return nil, err
		}
		if r == nil {
			continue // deleted since the list
		}
		if o, ok := origin.OfUpstream(r.Upstream); ok {
			set[o.String()] = struct{}{}
		}
	}
	return set, nil
}

const tunnelHelp = `
phantom-proxy calls this at each CONNECT on its forward-proxy listener,
before it answers: may a tunnel to this origin be opened? Input: origin
("host:port", lower-case host, explicit port, as the proxy canonicalised
the CONNECT target), and optionally token (the CONNECT's proxy credentials)
and client_ip.

With a token, the tunnel is allowed when the token is live as resolve would
judge it (known, not expired, revoked, used up or over its budget, its
route not deleted, the client inside its bound_cidrs) and its route's
upstream is exactly https://<origin> with no base path. Without one, it is
allowed when some route of this mount has such an upstream. The answer is
data: allowed, and on a denial reason (a resolve deny reason, or
origin_not_allowed) and message; route and accessor when the token is
known.

Nothing is counted: no use, request, usage or rate-limit slot, and nothing
is written. Each request inside the tunnel is resolved as usual. Grant this
path only to the proxy's policy (capability patch).
`
