// Package resolve is the contract between the engine and phantom-proxy: the
// resolve call's request and answers as they cross the wire, the deny
// reasons with the status and message the agent sees for each, the auth
// types and the credential placeholder, and the method rule. The engine
// encodes answers and the proxy decodes them with these types, so a field
// changed here changes on both sides at once.
package resolve

import "time"

// Field names of a resolve request, as the engine's path declares them.
const (
	FieldToken    = "token"
	FieldMethod   = "method"
	FieldPath     = "path"
	FieldClientIP = "client_ip"
	FieldAction   = "action"
	FieldRequests = "requests"
)

// MaxBatch bounds the requests one resolve call may carry.
const MaxBatch = 256

// TimeLayout is how expires_at is written.
const TimeLayout = time.RFC3339

// Request is one request the proxy is about to forward, as it asks the
// engine about it. Its JSON names are the Field constants.
type Request struct {
	Token    string `json:"token"`
	Method   string `json:"method"`
	Path     string `json:"path"` // exactly the bytes that will be forwarded, no query
	ClientIP string `json:"client_ip"`
	// Action is the API operation of a request to a signed route, as the
	// proxy reads it ("s3:GetObject"; several after commas when its headers
	// do more, "s3:PutObject,s3:PutObjectAcl"), each checked against
	// allowed_actions; "" when the proxy cannot tell (refused where
	// allowed_actions apply).
	Action string `json:"action,omitempty"`
	// HMAC: on a route of auth_type hmac, what the signature covers (hmac.go).
	HMAC *HMACInput `json:"hmac,omitempty"`
}

// BatchRequest is several requests in one call; the answer is a BatchAnswer.
type BatchRequest struct {
	Requests []Request `json:"requests"`
}

// Answer is the engine's decision on one request. A denial carries Reason
// and Message, and Route and Accessor when the token is known. An allowed
// answer carries Route, Accessor, ExpiresAt, UsesRemaining for tokens with
// num_uses, and, when the request came alone, its route's grant.
type Answer struct {
	Allowed       *bool  `json:"allowed"` // a pointer: an answer without it is malformed
	Reason        string `json:"reason,omitempty"`
	Message       string `json:"message,omitempty"`
	Route         string `json:"route,omitempty"`
	Accessor      string `json:"accessor,omitempty"`
	ExpiresAt     string `json:"expires_at,omitempty"` // TimeLayout
	UsesRemaining *int   `json:"uses_remaining,omitempty"`
	// RetryAfterMS comes with ReasonRateLimited: how long until the request
	// would be allowed, in milliseconds.
	RetryAfterMS int64 `json:"retry_after_ms,omitempty"`
	// Limits are this request's limits (limits.go), on an allowed answer.
	Limits *Limits `json:"limits,omitempty"`
	// HMAC routes (hmac.go): what to send, with ReasonHMACInputs; this
	// request's signature, when allowed.
	HMACNeeds     *HMACNeeds     `json:"hmac_needs,omitempty"`
	HMACSignature *HMACSignature `json:"hmac_signature,omitempty"`
	*RouteGrant
}

// RouteGrant is how to forward to a route: where, with which credential,
// injected how, with which static headers.
type RouteGrant struct {
	Upstream   string            `json:"upstream"`
	Credential string            `json:"credential"`
	AuthType   string            `json:"auth_type"`   // AuthBearer, AuthHeader, AuthBasic or AuthQuery
	AuthName   string            `json:"auth_name"`   // header or query parameter name
	AuthFormat string            `json:"auth_format"` // template around Placeholder
	Headers    map[string]string `json:"headers"`
	HMAC       *HMACGrant        `json:"hmac,omitempty"` // AuthHMAC only; Credential is then empty
	// AWS is how to sign for an aws_sigv4 route, whose Credential is then
	// the day's signing key (hex), never the secret access key.
	AWS *AWSGrant `json:"aws,omitempty"`
	// Mask are earlier credentials of the route that still work upstream
	// (an exchanged route's access token until it expires): never sent,
	// masked in responses like the credential.
	Mask []string `json:"mask,omitempty"`
}

// AWSGrant is what the proxy needs, beside the signing key, to sign a
// request with SigV4 for one day, region and service.
type AWSGrant struct {
	AccessKeyID  string `json:"access_key_id"`
	Region       string `json:"region"`
	Service      string `json:"service"`
	Date         string `json:"date"` // the signing key's day, YYYYMMDD (UTC)
	SessionToken string `json:"session_token,omitempty"`
}

// BatchAnswer answers a BatchRequest: one decision per request, in order,
// and the grant of each allowed route once. An allowed result may carry a
// grant of its own (a token whose access token is narrowed to it), which is
// then its route's for it alone.
type BatchAnswer struct {
	Results []*Answer              `json:"results"`
	Routes  map[string]*RouteGrant `json:"routes"`
}

// InlineShared moves the shared grant of every route that has a result with
// a grant of its own onto that route's other allowed results: a proxy that
// predates grants on results then finds no grant for the route and fails
// closed, instead of forwarding with the route's shared grant a request
// whose own it ignored.
func (b *BatchAnswer) InlineShared() {
	for _, own := range b.Results {
		if own == nil || own.RouteGrant == nil {
			continue
		}
		shared := b.Routes[own.Route]
		if shared == nil {
			continue
		}
		delete(b.Routes, own.Route)
		for _, a := range b.Results {
			if a != nil && a.Route == own.Route && a.Allowed != nil && *a.Allowed && a.RouteGrant == nil {
				a.RouteGrant = shared
			}
		}
	}
}

// Reply is the data of either answer, as the proxy decodes it: the fields
// of an Answer to one request, or those of a BatchAnswer.
type Reply struct {
	Answer
	BatchAnswer
}

// Deny is a denial; Route and Accessor are the caller's to fill in.
func Deny(reason, message string) *Answer {
	return &Answer{Allowed: new(false), Reason: reason, Message: message}
}

// Allow is an allowed answer, without its route's grant.
func Allow(route, accessor string, expiresAt time.Time) *Answer {
	return &Answer{Allowed: new(true), Route: route, Accessor: accessor, ExpiresAt: expiresAt.Format(TimeLayout)}
}

// The engine answers with logical.Response.Data, a map that Vault encodes
// as JSON: the Data methods build, for each type, the map whose JSON is the
// type's own (TestDataIsTheWireJSON holds them to it). Vault's audit devices
// HMAC every string in it.

// Data is a as the engine returns it.
func (a *Answer) Data() map[string]any {
	size := 8
	if a.RouteGrant != nil {
		size += 7
	}
	d := make(map[string]any, size)
	d["allowed"] = a.Allowed != nil && *a.Allowed
	put := func(k, v string) { // omitempty
		if v != "" {
			d[k] = v
		}
	}
	put("reason", a.Reason)
	put("message", a.Message)
	put("route", a.Route)
	put("accessor", a.Accessor)
	put("expires_at", a.ExpiresAt)
	if a.UsesRemaining != nil {
		d["uses_remaining"] = *a.UsesRemaining
	}
	if a.RetryAfterMS != 0 {
		d["retry_after_ms"] = a.RetryAfterMS
	}
	if !a.Limits.Empty() {
		d["limits"] = a.Limits.Data()
	}
	if a.HMACNeeds != nil {
		d["hmac_needs"] = map[string]any{"body": a.HMACNeeds.Body, "max_body": a.HMACNeeds.MaxBody}
	}
	if a.HMACSignature != nil {
		d["hmac_signature"] = map[string]any{"timestamp": a.HMACSignature.Timestamp, "signature": a.HMACSignature.Signature}
	}
	if a.RouteGrant != nil {
		a.RouteGrant.addTo(d)
	}
	return d
}

// Data is g as the engine returns it.
func (g *RouteGrant) Data() map[string]any {
	d := make(map[string]any, 7)
	g.addTo(d)
	return d
}

func (g *RouteGrant) addTo(d map[string]any) {
	headers := g.Headers
	if headers == nil {
		headers = map[string]string{}
	}
	d["upstream"] = g.Upstream
	d["credential"] = g.Credential
	d["auth_type"] = g.AuthType
	d["auth_name"] = g.AuthName
	d["auth_format"] = g.AuthFormat
	d["headers"] = headers
	if a := g.AWS; a != nil {
		aws := map[string]any{"access_key_id": a.AccessKeyID, "region": a.Region, "service": a.Service, "date": a.Date}
		if a.SessionToken != "" {
			aws["session_token"] = a.SessionToken
		}
		d["aws"] = aws
	}
	if g.HMAC != nil {
		d["hmac"] = g.HMAC.data()
	}
	if len(g.Mask) > 0 {
		d["mask"] = g.Mask
	}
}

// Data is b as the engine returns it.
func (b *BatchAnswer) Data() map[string]any {
	results := make([]map[string]any, len(b.Results))
	for i, a := range b.Results {
		results[i] = a.Data()
	}
	routes := make(map[string]any, len(b.Routes))
	for name, g := range b.Routes {
		routes[name] = g.Data()
	}
	return map[string]any{"results": results, "routes": routes}
}
