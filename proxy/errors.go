package proxy

import (
	"encoding/json"
	"net/http"
)

// Error types the agent sees. SDKs retry 429 and 5xx and do not retry 401 and
// 403, so a dead token must never look transient.
const (
	errBadRequest       = "phantom_bad_request"        // 400
	errUnauthorized     = "phantom_unauthorized"       // 401: missing, unknown, expired, revoked, used-up token
	errForbidden        = "phantom_forbidden"          // 403: out of scope
	errMethodNotAllowed = "phantom_method_not_allowed" // 405: CONNECT, TRACE
	errRequestTimeout   = "phantom_request_timeout"    // 408: the request body stalled
	errTooLarge         = "phantom_request_too_large"  // 413
	errRateLimited      = "phantom_rate_limited"       // 429
	errUpstream         = "phantom_upstream_error"     // 502
	errUnavailable      = "phantom_unavailable"        // 503: Vault unreachable or proxy not authenticated
	errUpstreamTimeout  = "phantom_upstream_timeout"   // 504
)

// statusType is the error type of each status the proxy answers with.
var statusType = map[int]string{
	http.StatusBadRequest:            errBadRequest,
	http.StatusRequestTimeout:        errRequestTimeout,
	http.StatusUnauthorized:          errUnauthorized,
	http.StatusForbidden:             errForbidden,
	http.StatusMethodNotAllowed:      errMethodNotAllowed,
	http.StatusRequestEntityTooLarge: errTooLarge,
	http.StatusTooManyRequests:       errRateLimited,
	http.StatusBadGateway:            errUpstream,
	http.StatusServiceUnavailable:    errUnavailable,
	http.StatusGatewayTimeout:        errUpstreamTimeout,
}

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Type      string `json:"type"`
	Reason    string `json:"reason,omitempty"`
	Message   string `json:"message"`
	RequestID string `json:"request_id,omitempty"`
}

// writeError answers with a JSON error. Messages are fixed strings chosen
// here: never an internal error text, a token, a credential or an address.
func writeError(w http.ResponseWriter, status int, typ, reason, message, requestID string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(errorBody{Error: errorDetail{Type: typ, Reason: reason, Message: message, RequestID: requestID}})
}
