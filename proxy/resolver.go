package proxy

import "context"

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

// ResolveRequest is what the proxy is about to forward.
type ResolveRequest struct {
	Token    string
	Method   string
	Path     string // exactly the bytes that will be forwarded
	ClientIP string
}

// Decision is the engine's answer. Grant is set when Allowed.
type Decision struct {
	Allowed  bool
	Reason   string // deny reason, machine-readable
	Message  string
	Route    string
	Accessor string
	Grant    *Grant
}
