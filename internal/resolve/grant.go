package resolve

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// How a route's credential reaches the upstream (RouteGrant.AuthType).
const (
	AuthBearer = "bearer" // Authorization: Bearer <credential>
	AuthHeader = "header" // <auth_name>: <auth_format>
	AuthBasic  = "basic"  // Authorization: Basic base64(<auth_format>)
	AuthQuery  = "query"  // ?<auth_name>=<auth_format>
	// AuthAWSSigV4 signs each request with AWS Signature Version 4, with a
	// signing key the engine derives for one day, region and service.
	AuthAWSSigV4 = "aws_sigv4"
	// AuthHMAC (hmac.go): the engine signs each request; no credential
	// reaches the proxy.
)

// Placeholder stands for the credential in an auth format.
const Placeholder = "{{credential}}"

// Injection returns where a credential of authType goes (the header or
// query parameter name) and the template around it, filling in the
// defaults: header and query take the route's name, basic's format
// defaults to "<credential>:" (a key as user name, no password), bearer has
// a fixed form.
func Injection(authType, header, queryParam, format string) (name, template string) {
	switch authType {
	case AuthHeader:
		return header, orDefault(format, Placeholder)
	case AuthBasic:
		return "Authorization", orDefault(format, Placeholder+":")
	case AuthQuery:
		return queryParam, orDefault(format, Placeholder)
	default:
		return "Authorization", "Bearer " + Placeholder
	}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Grant is an allowed answer as the proxy acts on it: checked, its upstream
// and expiry parsed.
type Grant struct {
	Route      string
	Accessor   string
	Upstream   *url.URL
	Credential string
	AuthType   string // AuthBearer, AuthHeader, AuthBasic or AuthQuery
	AuthName   string // header or query parameter name
	AuthFormat string // template around Placeholder
	Headers    map[string]string
	ExpiresAt  time.Time // zero when the engine sent none
	Limits     *Limits   // nil when none apply
	AWS        *AWSGrant // with AuthAWSSigV4, whose Credential is the signing key

	HMAC *HMACSigned // AuthHMAC only
	Mask []string    // earlier credentials, masked in responses, never sent
}

// AuthValue is the credential as the route sends it, before any encoding.
func (g *Grant) AuthValue() string {
	return strings.ReplaceAll(g.AuthFormat, Placeholder, g.Credential)
}

// Answers pairs the reply to n requests with its decisions, in order: the
// reply itself for one request, its results for several, each allowed one
// given its route's grant.
func (r *Reply) Answers(n int) ([]*Answer, error) {
	if n == 1 {
		return []*Answer{&r.Answer}, nil
	}
	if len(r.Results) != n {
		return nil, fmt.Errorf("%d decisions for %d requests", len(r.Results), n)
	}
	for _, a := range r.Results {
		if a == nil {
			return nil, errors.New("a null decision")
		}
		if a.Allowed != nil && *a.Allowed && a.RouteGrant == nil { // else its own (BatchAnswer.InlineShared)
			g := r.Routes[a.Route]
			if g == nil {
				return nil, fmt.Errorf("no grant for route %q", a.Route)
			}
			a.RouteGrant = g
		}
	}
	return r.Results, nil
}

// MaxMask bounds RouteGrant.Mask (an exchanged route's earlier tokens and
// those of its other narrowings).
const MaxMask = 64

// Bounds on a RouteGrant.Mask value: a short one would mask ordinary text.
const (
	minMaskLen = 8
	maxMaskLen = 16 << 10
)

// Validate checks an answer as the proxy receives it, refusing anything
// malformed, and returns the grant of an allowed one (nil for a denial).
func (a *Answer) Validate() (*Grant, error) {
	if a.Allowed == nil {
		return nil, errors.New("resolve answer lacks allowed")
	}
	if !*a.Allowed {
		if a.Reason == "" {
			return nil, errors.New("resolve denial lacks a reason")
		}
		return nil, nil
	}
	rg := a.RouteGrant
	if rg == nil {
		rg = &RouteGrant{}
	}
	upstream, err := url.Parse(rg.Upstream)
	if err != nil || (upstream.Scheme != "https" && upstream.Scheme != "http") || upstream.Host == "" {
		return nil, errors.New("resolve answer has no usable upstream")
	}
	var signed *HMACSigned
	if rg.AuthType == AuthHMAC {
		if signed, err = a.hmacSigned(rg); err != nil {
			return nil, err
		}
	} else if rg.Credential == "" || rg.AuthName == "" || !strings.Contains(rg.AuthFormat, Placeholder) {
		return nil, errors.New("resolve answer lacks the credential or how to inject it")
	}
	switch rg.AuthType {
	case "", AuthBearer, AuthHeader, AuthBasic, AuthQuery, AuthHMAC: // "" is bearer: routes older than auth_type
		if rg.AWS != nil {
			return nil, errors.New("resolve answer has signing settings for a pasted credential")
		}
	case AuthAWSSigV4:
		if err := rg.AWS.check(rg.Credential); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("resolve answer has an auth_type this proxy does not know (%q)", rg.AuthType)
	}
	g := &Grant{
		Route: a.Route, Accessor: a.Accessor, Upstream: upstream,
		Credential: rg.Credential, AuthType: rg.AuthType, AuthName: rg.AuthName, AuthFormat: rg.AuthFormat,
		Headers: rg.Headers, AWS: rg.AWS, HMAC: signed,
	}
	if len(rg.Mask) > MaxMask {
		return nil, errors.New("resolve answer has too many earlier credentials to mask")
	}
	for _, m := range rg.Mask {
		if len(m) < minMaskLen || len(m) > maxMaskLen {
			return nil, errors.New("resolve answer has an earlier credential to mask of an unusable length")
		}
	}
	g.Mask = rg.Mask
	if !a.Limits.Empty() {
		g.Limits = a.Limits
	}
	if t, err := time.Parse(TimeLayout, a.ExpiresAt); err == nil {
		g.ExpiresAt = t
	}
	return g, nil
}

// check refuses SigV4 settings the proxy could not sign with.
func (a *AWSGrant) check(signingKey string) error {
	switch {
	case a == nil:
		return errors.New("resolve answer for an aws_sigv4 route lacks its signing settings")
	case a.AccessKeyID == "" || a.Region == "" || a.Service == "":
		return errors.New("resolve answer for an aws_sigv4 route lacks the access key id, region or service")
	case len(signingKey) != 64 || strings.Trim(signingKey, "0123456789abcdef") != "":
		return errors.New("resolve answer for an aws_sigv4 route has no signing key")
	}
	if _, err := time.Parse("20060102", a.Date); err != nil || len(a.Date) != 8 {
		return errors.New("resolve answer for an aws_sigv4 route has no signing day")
	}
	return nil
}
