package proxy

import (
	"context"

	"github.com/phantomvault/phantom/internal/resolve"
)

// Resolver answers, for one request, whether its phantom token may make it.
// VaultResolver asks the engine; tests use a double.
type Resolver interface {
	// Resolve returns the engine's decision. An error means no decision
	// could be had (Vault unreachable, the proxy not authenticated): the
	// proxy then fails closed.
	Resolve(ctx context.Context, req ResolveRequest) (*Decision, error)
	// Ready reports whether Resolve can currently reach a decision.
	Ready(ctx context.Context) bool
}

// ResolveRequest is what the proxy is about to forward, exactly as it asks
// the engine about it.
type ResolveRequest = resolve.Request

// Decision is the engine's answer. Grant is set when Allowed.
type Decision struct {
	Allowed  bool
	Reason   string // deny reason, machine-readable (resolve.Reason*)
	Message  string
	Route    string
	Accessor string
	Grant    *Grant
	// RetryAfterMS comes with a rate_limited denial: when a retry may pass.
	RetryAfterMS int64
}
