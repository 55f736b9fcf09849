package engine

import (
	"context"
	"errors"

	"github.com/phantomvault/phantom/internal/resolve"
)

// Client is everything the proxy asks the engine. Vault asks it through
// Vault; enginetest.Engine plays it in memory. The proxy takes each part
// where it is used: the server a Resolver, the forward listener a
// TunnelChecker, the usage reporter a UsageSink.
type Client interface {
	Resolver
	TunnelChecker
	UsageSink
}

var _ Client = (*Vault)(nil)

// Resolver answers, for one request, whether its phantom token may make it.
type Resolver interface {
	// Resolve returns the engine's decision. An error means no decision
	// could be had (Vault unreachable, the proxy not authenticated,
	// ErrOverloaded): the proxy then fails closed.
	Resolve(ctx context.Context, req resolve.Request) (*Decision, error)
	// Ready reports whether Resolve can currently reach a decision.
	Ready(ctx context.Context) bool
}

// TunnelChecker decides, at each CONNECT on the forward listener and before
// it is answered, whether a tunnel to an origin may be opened. An error
// means no decision could be had, and the proxy fails closed.
type TunnelChecker interface {
	CheckTunnel(ctx context.Context, req resolve.TunnelRequest) (*resolve.TunnelAnswer, error)
}

// UsageSink takes the LLM usage the proxy measured to the engine.
type UsageSink interface {
	ReportUsage(ctx context.Context, reports []resolve.UsageReport) error
}

// Decision is the engine's answer on one request, validated: Allowed is
// set, a denial carries its Reason, and Grant is set exactly when the
// request is allowed.
type Decision struct {
	*resolve.Answer
	Grant *resolve.Grant
}

// ErrOverloaded sheds a request when too many already wait for Vault.
var ErrOverloaded = errors.New("too many requests are waiting for Vault")
