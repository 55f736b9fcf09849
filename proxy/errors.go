package proxy

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/internal/sigv4"
	"github.com/phantomvault/phantom/proxy/inject"
	"github.com/phantomvault/phantom/proxy/metering"
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
	http.StatusProxyAuthRequired:     errUnauthorized,
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

// refusal is a request the proxy answers itself: each stage of the pipeline
// may return one, and Server.refuse (or proxyError, once the upstream was
// called) answers it. Its status is always the one table's for its reason
// (internal/resolve/reason.go), but for two answers of the transport
// itself: 405 to a method no route can have (CONNECT, TRACE) and 407 to
// the forward listener's proxy credentials.
type refusal struct {
	status     int
	reason     string // machine-readable: resolve.Reason* or the proxy's own
	message    string // fixed text for the agent (see writeError)
	retryAfter string // Retry-After, when a retry may succeed
	// retryAfterMS is the same wait in milliseconds (Retry-After-Ms, which
	// the OpenAI and Anthropic SDKs read before Retry-After).
	retryAfterMS string
	allow        string // Allow, on 405
	// challenge asks for Basic credentials (WWW-Authenticate), on the 401
	// to a request that carried none.
	challenge bool
}

// refusalFor is the refusal of reason, with the status and message the one
// table (internal/resolve/reason.go) gives it.
func refusalFor(reason string) *refusal {
	status, message := resolve.Refusal(reason)
	return &refusal{status: status, reason: reason, message: message}
}

// refusalWith is the refusal of reason, with the table's status and a
// message that says more than the table's.
func refusalWith(reason, message string) *refusal {
	ref := refusalFor(reason)
	ref.message = message
	return ref
}

// meteringRefusal is the proxy's answer to a refusal of the limits: the
// status is the reasons table's, the message metering's when it has one.
func meteringRefusal(r *metering.Refusal) *refusal {
	if r.Message == "" {
		return refusalFor(r.Reason)
	}
	return refusalWith(r.Reason, r.Message)
}

// unvouched refuses a client whose unknown-token budget is spent
// (unknown_limit.go) until wait has passed.
func unvouched(wait time.Duration, message string) *refusal {
	ref := refusalWith(resolve.ReasonRateLimited, message)
	ref.retryAfter = strconv.Itoa(int(wait.Round(time.Second)/time.Second) + 1)
	return ref
}

// refuse answers ref. A refused client keeps no connection: idle
// keep-alives of clients without a valid token must not fill the listener.
// A refused body is never read: the answer goes at once, rather than the
// server waiting to drain a body that may never come.
func (s *Server) refuse(w http.ResponseWriter, r *http.Request, rec *auditRecord, ref *refusal) {
	w.Header().Set("Connection", "close")
	if r.ContentLength != 0 {
		http.NewResponseController(w).SetReadDeadline(time.Now())
	}
	answer(w, rec, ref)
}

// answer writes ref as the agent sees it and records its reason: the one
// place a refusal becomes a response.
func answer(w http.ResponseWriter, rec *auditRecord, ref *refusal) {
	rec.Reason = ref.reason
	h := w.Header()
	h.Set(requestIDHeader, rec.RequestID)
	if ref.allow != "" {
		h.Set("Allow", ref.allow)
	}
	if ref.retryAfter != "" {
		h.Set("Retry-After", ref.retryAfter)
	}
	if ref.retryAfterMS != "" {
		h.Set("Retry-After-Ms", ref.retryAfterMS)
	}
	if ref.challenge {
		h.Set("WWW-Authenticate", `Basic realm="phantom"`)
	}
	if ref.status == http.StatusProxyAuthRequired {
		// The forward listener's 401 for the proxy hop: curl, git and
		// requests then report a proxy authentication failure.
		h.Set("Proxy-Authenticate", `Basic realm="phantom"`)
	}
	writeError(w, ref.status, statusType[ref.status], ref.reason, ref.message, rec.RequestID)
}

// unsignable is the refusal of a request its route's style could not sign
// as it came (a malformed payload hash or aws-chunked body): 400, with
// what is wrong, which quotes nothing of the request.
func unsignable(err error) *refusal {
	var re *inject.RequestError
	switch {
	case errors.As(err, &re):
		return refusalWith(resolve.ReasonBadRequest, re.Error())
	case errors.Is(err, sigv4.ErrChunk):
		return refusalWith(resolve.ReasonBadRequest, sigv4.ErrChunk.Error())
	}
	return nil
}
