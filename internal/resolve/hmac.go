package resolve

import (
	"errors"
	"net/url"
	"strings"

	"github.com/phantomvault/phantom/internal/reqpath"
)

// auth_type=hmac: the engine signs each request with a secret that never
// leaves Vault. The proxy sends what the signature covers that only it
// knows (the query as forwarded, the body or its hash); the engine renders
// the route's message itself, with the method and path it authorized and a
// timestamp from its own clock, and answers the signature of that one
// request. The proxy gets no credential, only where to put what it got.
//
// A route's first resolve without HMAC inputs is answered with
// ReasonHMACInputs and HMACNeeds (after the token's scope is checked, before
// any use or rate is counted); the proxy then reads what is needed and asks
// again with HMACInput.

// AuthHMAC is the auth type of signed routes (RouteGrant.AuthType).
const AuthHMAC = "hmac"

// FieldHMAC is the resolve request's HMAC inputs field (Request.HMAC).
const FieldHMAC = "hmac"

// What of the body an HMAC route's message covers (HMACNeeds.Body).
const (
	HMACBodyNone   = "none"   // nothing: the body streams as usual
	HMACBodyRaw    = "raw"    // {body}: the proxy sends the body, base64, up to MaxBody bytes
	HMACBodySHA256 = "sha256" // only {body_sha256}: the proxy sends the hex SHA-256
)

// HMACInput is what the proxy sends for a request on an HMAC route.
type HMACInput struct {
	// Query is the query string as it will be forwarded, without '?' and
	// before the route's timestamp parameter is added (HMACGrant.SignedQuery).
	Query      string `json:"query"`
	Body       string `json:"body,omitempty"`        // standard base64 of the body (HMACBodyRaw)
	BodySHA256 string `json:"body_sha256,omitempty"` // lower-case hex (HMACBodySHA256)
}

// HMACNeeds comes with ReasonHMACInputs: what of the body to send.
type HMACNeeds struct {
	Body    string `json:"body"`     // HMACBody*
	MaxBody int64  `json:"max_body"` // for HMACBodyRaw: the most the engine signs
}

// HMACSignature comes with an allowed answer on an HMAC route: one per
// request, never shared by a batch.
type HMACSignature struct {
	Timestamp string `json:"timestamp"` // as the route formats it; "" when the route sends none
	Signature string `json:"signature"` // encoded as the route says
}

// HMACGrant is where an HMAC route's proxy puts what the engine signed.
// KeyID and Passphrase are no signing secret, but they are masked in
// responses like one.
type HMACGrant struct {
	SignatureHeader  string `json:"signature_header,omitempty"`
	SignatureQuery   string `json:"signature_query,omitempty"` // appended as the last parameter
	TimestampHeader  string `json:"timestamp_header,omitempty"`
	TimestampQuery   string `json:"timestamp_query,omitempty"`
	KeyID            string `json:"key_id,omitempty"`
	KeyIDHeader      string `json:"key_id_header,omitempty"`
	Passphrase       string `json:"passphrase,omitempty"`
	PassphraseHeader string `json:"passphrase_header,omitempty"`
	Body             string `json:"body"`     // HMACBody*
	MaxBody          int64  `json:"max_body"` // for HMACBodyRaw
}

// SignedQuery is the query an HMAC route forwards and signs: query without
// the parameters the proxy sets (the timestamp's and the signature's, which
// an agent may not choose), then the timestamp parameter. Engine and proxy
// both build it here, so what is signed is what is sent.
func (g *HMACGrant) SignedQuery(query, timestamp string) string {
	q := reqpath.DropQueryParams(query, func(key, _ string) bool {
		return key != "" && (key == g.TimestampQuery || key == g.SignatureQuery)
	})
	if g.TimestampQuery == "" {
		return q
	}
	if q != "" {
		q += "&"
	}
	return q + url.QueryEscape(g.TimestampQuery) + "=" + url.QueryEscape(timestamp)
}

// ForwardPath is the path the upstream gets: the upstream's own path, then
// the request's (both escaped, as forwarded).
func ForwardPath(upstream *url.URL, path string) string {
	return strings.TrimSuffix(upstream.EscapedPath(), "/") + path
}

// HMACSigned is an allowed answer's signature with where it goes, and the
// query the proxy sent for it (set by the proxy, never on the wire).
type HMACSigned struct {
	HMACGrant
	HMACSignature
	Query string
}

// hmacSigned checks an HMAC answer as the proxy receives it.
func (a *Answer) hmacSigned(rg *RouteGrant) (*HMACSigned, error) {
	g, s := rg.HMAC, a.HMACSignature
	switch {
	case g == nil || s == nil || s.Signature == "":
		return nil, errors.New("resolve answer for an hmac route lacks its signature or where it goes")
	case (g.SignatureHeader == "") == (g.SignatureQuery == ""):
		return nil, errors.New("resolve answer for an hmac route puts the signature in no place or two")
	case g.TimestampHeader != "" && g.TimestampQuery != "", (g.TimestampHeader != "" || g.TimestampQuery != "") && s.Timestamp == "":
		return nil, errors.New("resolve answer for an hmac route has no usable timestamp")
	case rg.Credential != "":
		return nil, errors.New("resolve answer for an hmac route carries a credential")
	}
	return &HMACSigned{HMACGrant: *g, HMACSignature: *s}, nil
}

// data is g as the engine returns it: as its JSON, empty strings left out.
func (g *HMACGrant) data() map[string]any {
	d := map[string]any{"body": g.Body, "max_body": g.MaxBody}
	for k, v := range map[string]string{
		"signature_header": g.SignatureHeader, "signature_query": g.SignatureQuery,
		"timestamp_header": g.TimestampHeader, "timestamp_query": g.TimestampQuery,
		"key_id": g.KeyID, "key_id_header": g.KeyIDHeader,
		"passphrase": g.Passphrase, "passphrase_header": g.PassphraseHeader,
	} {
		if v != "" {
			d[k] = v
		}
	}
	return d
}
