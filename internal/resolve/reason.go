package resolve

import "net/http"

// Deny reasons. The token states (expired, revoked, route_deleted,
// uses_exhausted) are the engine's token statuses under the same names.
const (
	ReasonUnknownToken     = "unknown_token"
	ReasonExpired          = "expired"
	ReasonRevoked          = "revoked"
	ReasonRouteDeleted     = "route_deleted"
	ReasonUsesExhausted    = "uses_exhausted"
	ReasonCIDRDenied       = "cidr_denied"
	ReasonMethodNotAllowed = "method_not_allowed"
	ReasonPathNotAllowed   = "path_not_allowed"
	// ReasonActionNotAllowed: a signed route's API operation (s3:PutObject)
	// is outside allowed_actions, or the proxy could not tell which it is.
	ReasonActionNotAllowed = "action_not_allowed"
	ReasonBadRequest       = "bad_request"
	// ReasonOriginNotAllowed refuses a forward-proxy tunnel, or a request
	// inside one, whose origin is not its token's route's (https, no base
	// path): the engine at CONNECT (the tunnel call), the proxy per request.
	ReasonOriginNotAllowed = "origin_not_allowed"

	// Limits (limits.go). A spent budget is a dead token, like used-up
	// uses; a rate limit is transient (429 with Retry-After); a model
	// outside the allow-list or a request above the output cap is out of
	// scope. The proxy decides the last two from the answer's Limits.
	ReasonRateLimited     = "rate_limited"
	ReasonBudgetExhausted = "budget_exhausted"
	// ReasonBudgetPending: what is left of the budget is reserved by
	// requests still in flight; retry once their usage is in (429).
	ReasonBudgetPending     = "budget_pending"
	ReasonModelNotAllowed   = "model_not_allowed"
	ReasonOutputCapExceeded = "max_output_tokens_exceeded"

	// ReasonHMACInputs asks the proxy for what an HMAC route's signature
	// covers (hmac.go); an agent sees it only from a proxy that cannot
	// send it.
	ReasonHMACInputs = "hmac_inputs_required"

	// ReasonCredentialExchange: an exchanged route (OAuth2) could not get
	// an access token from its token endpoint (down, slow, refusing, or an
	// answer the engine cannot use). Transient for the agent (502): the
	// engine retries by itself once the endpoint recovers.
	ReasonCredentialExchange = "credential_exchange_failed"
)

// reasons is what the agent sees for each deny reason. A dead token is 401
// and a token out of its scope 403: SDKs retry neither, so a dead token
// never looks transient. Messages reveal nothing about the route.
var reasons = []reasonEntry{
	{ReasonUnknownToken, http.StatusUnauthorized, "the phantom token is not valid"},
	{ReasonExpired, http.StatusUnauthorized, "the phantom token has expired; mint a new one"},
	{ReasonRevoked, http.StatusUnauthorized, "the phantom token was revoked"},
	{ReasonRouteDeleted, http.StatusUnauthorized, "the phantom token's route no longer exists"},
	{ReasonUsesExhausted, http.StatusUnauthorized, "the phantom token has no uses left"},
	{ReasonCIDRDenied, http.StatusForbidden, "the phantom token may not be used from this address"},
	{ReasonMethodNotAllowed, http.StatusForbidden, "this method is not allowed for the phantom token"},
	{ReasonPathNotAllowed, http.StatusForbidden, "this path is not allowed for the phantom token"},
	{ReasonActionNotAllowed, http.StatusForbidden, "this API operation is not allowed for the phantom token"},
	{ReasonBadRequest, http.StatusBadRequest, refusedMessage},
	{ReasonOriginNotAllowed, http.StatusForbidden, "no phantom token's route leads to this host and port (https, no base path)"},
	{ReasonRateLimited, http.StatusTooManyRequests, "the phantom token's rate limit was reached; retry after the time in Retry-After"},
	{ReasonBudgetExhausted, http.StatusUnauthorized, "the phantom token's LLM token budget is spent"},
	{ReasonBudgetPending, http.StatusTooManyRequests, "the rest of the phantom token's LLM token budget is held by requests in flight; retry after the time in Retry-After"},
	{ReasonModelNotAllowed, http.StatusForbidden, "this model is not allowed for the phantom token"},
	{ReasonOutputCapExceeded, http.StatusForbidden, "the request asks for more output tokens than the phantom token allows"},
	{ReasonHMACInputs, http.StatusBadGateway, "the route signs each request, and Phantom could not sign this one"},
	{ReasonCredentialExchange, http.StatusBadGateway, "Phantom could not get an access token for the upstream from its token endpoint; retry later"},
}

// The proxy's own answers, which no engine gives: here beside the engine's
// so that every reason an agent can see, its status and its message are in
// one place.
const (
	ReasonOverloaded       = "overloaded"
	ReasonVaultUnavailable = "vault_unavailable"
	ReasonBodyTooLarge     = "body_too_large"
	ReasonBodyTimeout      = "body_timeout"
	ReasonUpstreamError    = "upstream_error"
	ReasonUpstreamTimeout  = "upstream_timeout"
	// ReasonTLSHandshakeFailed is recorded, never answered: the client of
	// a tunnel did not complete TLS with the proxy.
	ReasonTLSHandshakeFailed = "tls_handshake_failed"
)

var proxyReasons = []reasonEntry{
	{ReasonOverloaded, http.StatusServiceUnavailable, "Phantom is overloaded; retry later"},
	{ReasonVaultUnavailable, http.StatusServiceUnavailable, "Phantom cannot reach Vault; retry later"},
	{ReasonBodyTooLarge, http.StatusRequestEntityTooLarge, "the request body is too large"},
	{ReasonBodyTimeout, http.StatusRequestTimeout, "the request body stopped arriving"},
	{ReasonUpstreamError, http.StatusBadGateway, "the upstream could not be reached"},
	{ReasonUpstreamTimeout, http.StatusGatewayTimeout, "the upstream did not answer in time"},
}

// A reason this table does not know (from a newer engine) is refused as
// out of scope, with a message that says nothing.
const refusedMessage = "the request was refused"

// reasonEntry is what the agent gets for one reason.
type reasonEntry struct {
	reason  string
	status  int
	message string
}

// Refusal returns the HTTP status and message the agent gets for a deny
// reason, or for one of the proxy's own.
func Refusal(reason string) (status int, message string) {
	for _, table := range [][]reasonEntry{reasons, proxyReasons} {
		for _, r := range table {
			if r.reason == reason {
				return r.status, r.message
			}
		}
	}
	return http.StatusForbidden, refusedMessage
}

// Known reports whether reason is one of the deny reasons.
func Known(reason string) bool {
	for _, r := range reasons {
		if r.reason == reason {
			return true
		}
	}
	return false
}

// Reasons lists the deny reasons, in the order of the table.
func Reasons() []string {
	out := make([]string, len(reasons))
	for i, r := range reasons {
		out[i] = r.reason
	}
	return out
}
