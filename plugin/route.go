package plugin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"golang.org/x/net/http/httpguts"

	"github.com/phantomvault/phantom/internal/reqpath"
	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/internal/scope"
	"github.com/phantomvault/phantom/internal/token"
)

// How a route's credential reaches the upstream: the contract's auth types
// (auth_header and auth_query_param become the grant's auth_name).
const (
	authBearer = resolve.AuthBearer
	authHeader = resolve.AuthHeader
	authBasic  = resolve.AuthBasic
	authQuery  = resolve.AuthQuery
	// authHMAC: auth_hmac.go
)

// routePrefix is where routes are stored: routes/<name> -> routeEntry,
// seal-wrapped (backend.go lists it in SealWrapStorage).
const routePrefix = "routes/"

const maxCredentialLen = 8 << 10

// routeEntry is one upstream, the scope tokens may use there, and the real
// credential. It is stored seal-wrapped under routes/<name>.
type routeEntry struct {
	// ID changes when a route is deleted and created again, so tokens of
	// the old route never come back to life under the new one.
	ID string `json:"id"`

	Upstream       string   `json:"upstream"`
	AllowHTTP      bool     `json:"allow_http"`
	AllowedPaths   []string `json:"allowed_paths"`
	AllowedMethods []string `json:"allowed_methods"`

	Credential     string             `json:"credential"`
	AuthType       string             `json:"auth_type"`
	AuthHeader     string             `json:"auth_header,omitempty"`
	AuthQueryParam string             `json:"auth_query_param,omitempty"`
	AuthFormat     string             `json:"auth_format,omitempty"`
	Headers        map[string]string  `json:"headers,omitempty"`
	AWS            *awsSettings       `json:"aws,omitempty"` // auth_type=aws_sigv4 (auth_aws.go)
	AllowedActions []string           `json:"allowed_actions,omitempty"`
	HMAC           *hmacSettings      `json:"hmac,omitempty"`       // auth_type=hmac only (auth_hmac.go)
	OAuth2         *oauth2Settings    `json:"oauth2,omitempty"`     // auth_type=oauth2_* (auth_oauth2.go)
	GitHubApp      *githubAppSettings `json:"github_app,omitempty"` // auth_type=github_app (auth_github_app.go)
	Google         *googleSettings    `json:"google,omitempty"`     // auth_type=google_service_account (auth_google.go)

	TTL         time.Duration `json:"ttl"`
	MaxTTL      time.Duration `json:"max_ttl"`
	NumUses     int           `json:"num_uses"`
	BoundCIDRs  []string      `json:"bound_cidrs,omitempty"`
	TokenPrefix string        `json:"token_prefix,omitempty"`

	// Rate limits, budgets, model allow-list and usage format (limits.go).
	Limits *routeLimits `json:"limits,omitempty"`

	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`

	boundCIDRs *scope.BoundCIDRs // BoundCIDRs parsed, set by UnmarshalJSON
	// accessToken is an exchanged route's access token for this resolve,
	// set on the resolve's own copy of the route (exchange.go), never stored.
	accessToken liveToken
}

// UnmarshalJSON decodes a stored route and parses its bound_cidrs once, so
// resolve (which memoizes decoded routes) does not parse them per request.
func (r *routeEntry) UnmarshalJSON(data []byte) error {
	type stored routeEntry // without this method
	if err := json.Unmarshal(data, (*stored)(r)); err != nil {
		return err
	}
	r.boundCIDRs = scope.ParseBoundCIDRs(r.BoundCIDRs)
	return nil
}

// cidrs returns the route's bound_cidrs, parsed.
func (r *routeEntry) cidrs() *scope.BoundCIDRs { return r.boundCIDRs.OrParse(r.BoundCIDRs) }

func getRoute(ctx context.Context, s logical.Storage, name string) (*routeEntry, error) {
	r, err := readJSON[routeEntry](ctx, s, routePrefix+name)
	if err != nil {
		return nil, fmt.Errorf("reading route %q: %w", name, err)
	}
	return r, nil
}

// getRouteShared is getRoute for resolve, the hot path: the route's slices
// and maps are shared with the cache, so they must only be read.
func getRouteShared(ctx context.Context, s logical.Storage, name string) (*routeEntry, error) {
	r, err := readJSONShared[routeEntry](ctx, s, routePrefix+name)
	if err != nil {
		return nil, fmt.Errorf("reading route %q: %w", name, err)
	}
	return r, nil
}

func putRoute(ctx context.Context, s logical.Storage, name string, r *routeEntry) error {
	entry, err := logical.StorageEntryJSON(routePrefix+name, r)
	if err != nil {
		return err
	}
	if err := s.Put(ctx, entry); err != nil {
		return fmt.Errorf("writing route %q: %w", name, err)
	}
	return nil
}

// fingerprint identifies a credential without revealing it: the first 12 hex
// digits of its SHA-256, which an admin can compare with
// `printf %s "$KEY" | sha256sum | cut -c1-12`.
func fingerprint(credential string) string {
	sum := sha256.Sum256([]byte(credential))
	return "sha256:" + hex.EncodeToString(sum[:6])
}

// deliveryChanges names the settings that decide where and how the
// credential is sent (its destination: the upstream URL, path prefix
// included, and the static headers; its form: the injection settings and
// allow_http) that differ between old and r. The credential is bound to
// them: a write that changes any of them must carry the credential again, or
// whoever may update a route could send the key it cannot read to a host it
// controls.
//
// The whole upstream counts, not only its origin: on shared hosts the path
// prefix picks the tenant (API gateways with the account in the path), and a
// static header can pick the backend behind a shared front end
// (x-apigw-api-id, X-Original-URL). Turning allow_http off only narrows, so
// only turning it on counts.
func (r *routeEntry) deliveryChanges(old *routeEntry) []string {
	var changed changes
	changed.add("upstream", r.Upstream != old.Upstream)
	changed.add("allow_http", r.AllowHTTP && !old.AllowHTTP)
	changed.add("auth_type", r.AuthType != old.AuthType)
	changed.add("auth_header", r.AuthHeader != old.AuthHeader)
	changed.add("auth_query_param", r.AuthQueryParam != old.AuthQueryParam)
	changed.add("auth_format", r.AuthFormat != old.AuthFormat)
	changed.add("headers", !maps.Equal(r.Headers, old.Headers))
	changed = append(changed, r.awsChanges(old)...)
	changed = append(changed, r.OAuth2.deliveryChanges(old.OAuth2)...)
	changed = append(changed, r.GitHubApp.deliveryChanges(old.GitHubApp)...)
	changed = append(changed, r.Google.deliveryChanges(old.Google)...)
	return append(changed, r.HMAC.deliveryChanges(old.HMAC)...)
}

// changes names the settings a write changes.
type changes []string

func (c *changes) add(field string, differs bool) {
	if differs {
		*c = append(*c, field)
	}
}

// injection returns how the credential is injected, with defaults filled in:
// the header (or query parameter) name and the value template.
func (r *routeEntry) injection() (name, format string) {
	return resolve.Injection(r.AuthType, r.AuthHeader, r.AuthQueryParam, r.AuthFormat)
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// validate checks a complete route and returns warnings worth showing.
func (r *routeEntry) validate() (warnings []string, err error) {
	w, err := validateUpstream(r.Upstream, r.AllowHTTP)
	if err != nil {
		return nil, fmt.Errorf("upstream: %w", err)
	}
	warnings = append(warnings, w...)

	if len(r.AllowedPaths) == 0 {
		return nil, errors.New("allowed_paths is required: at least one path pattern such as /v1/customers/**")
	}
	for _, p := range r.AllowedPaths {
		if err := scope.ValidatePattern(p); err != nil {
			return nil, fmt.Errorf("allowed_paths: %w", err)
		}
	}
	if len(r.AllowedMethods) == 0 {
		return nil, errors.New("allowed_methods is required: at least one HTTP method such as GET")
	}
	if _, exchanged := exchangers[r.AuthType]; r.AuthType != authAWSSigV4 && !exchanged {
		if err := validateCredential(r.Credential); err != nil {
			return nil, err
		}
	}
	if err := r.validateAuth(); err != nil {
		return nil, err
	}
	warnings = append(warnings, r.awsWarnings()...)
	if _, exchanged := exchangers[r.AuthType]; exchanged {
		w, err := r.validateExchanged() // auth_github_app.go
		if err != nil {
			return nil, err
		}
		warnings = append(warnings, w...)
	}
	if r.AuthType == authHMAC {
		w, err := r.validateHMAC() // auth_hmac.go
		if err != nil {
			return nil, err
		}
		warnings = append(warnings, w...)
	}
	for name, value := range r.Headers {
		if err := validateHeaderName(name); err != nil {
			return nil, fmt.Errorf("headers: %w", err)
		}
		if strings.EqualFold(name, r.authHeaderName()) {
			return nil, fmt.Errorf("headers: %q is where the credential is injected", name)
		}
		if !httpguts.ValidHeaderFieldValue(value) {
			// The value is not echoed: it may be sensitive.
			return nil, fmt.Errorf("headers: the value of %q contains a control character", name)
		}
	}
	if r.TTL < 0 || r.MaxTTL < 0 || r.NumUses < 0 {
		return nil, errors.New("ttl, max_ttl and num_uses must not be negative")
	}
	if r.MaxTTL > 0 && r.TTL > r.MaxTTL {
		return nil, fmt.Errorf("ttl (%s) must not exceed max_ttl (%s)", r.TTL, r.MaxTTL)
	}
	if _, err := scope.ParseCIDRs(r.BoundCIDRs); err != nil {
		return nil, fmt.Errorf("bound_cidrs: %w", err)
	}
	if r.TokenPrefix != "" && !token.ValidPrefix(r.TokenPrefix) {
		return nil, errors.New("token_prefix must be 1-32 characters of A-Z a-z 0-9 _ -")
	}
	if err := r.Limits.validate(); err != nil {
		return nil, err
	}
	return warnings, nil
}

// authHeaderName is the request header the credential goes into, or "" for
// query injection.
func (r *routeEntry) authHeaderName() string {
	if r.AuthType == authQuery || r.AuthType == authHMAC {
		return ""
	}
	name, _ := r.injection()
	return name
}

func (r *routeEntry) validateAuth() error {
	switch r.AuthType {
	case authBearer:
		if r.AuthHeader != "" || r.AuthQueryParam != "" || r.AuthFormat != "" {
			return errors.New("auth_type=bearer sends Authorization: Bearer <credential>; for another header or format use auth_type=header")
		}
	case authHeader:
		if r.AuthHeader == "" {
			return errors.New("auth_type=header needs auth_header, the header name (for example x-api-key)")
		}
		if err := validateHeaderName(r.AuthHeader); err != nil {
			return fmt.Errorf("auth_header: %w", err)
		}
		if r.AuthQueryParam != "" {
			return errors.New("auth_query_param applies only to auth_type=query")
		}
	case authBasic:
		if r.AuthHeader != "" || r.AuthQueryParam != "" {
			return errors.New("auth_type=basic always uses the Authorization header; auth_header and auth_query_param do not apply")
		}
	case authQuery:
		if r.AuthQueryParam == "" {
			return errors.New("auth_type=query needs auth_query_param, the query parameter name (for example key)")
		}
		if r.AuthHeader != "" {
			return errors.New("auth_header applies only to auth_type=header")
		}
		if !isQueryName(r.AuthQueryParam) {
			return errors.New("auth_query_param must be 1-64 characters of A-Z a-z 0-9 _ - .")
		}
	case authAWSSigV4:
		return r.validateAWS()
	case authHMAC, authOAuth2ClientCredentials, authOAuth2RefreshToken, authGitHubApp, authGoogleServiceAccount: // validateHMAC, validateExchanged
	default:
		return fmt.Errorf("auth_type must be one of bearer, header, basic, query, aws_sigv4, hmac, oauth2_client_credentials, oauth2_refresh_token, github_app, google_service_account (got %q)", r.AuthType)
	}
	if r.AuthFormat != "" {
		if !strings.Contains(r.AuthFormat, resolve.Placeholder) {
			return fmt.Errorf("auth_format must contain %s", resolve.Placeholder)
		}
		if !httpguts.ValidHeaderFieldValue(r.AuthFormat) {
			return errors.New("auth_format contains a control character")
		}
	}
	return nil
}

func validateCredential(c string) error {
	switch {
	case c == "":
		return errors.New("credential is required")
	case len(c) > maxCredentialLen:
		return fmt.Errorf("credential is longer than %d bytes", maxCredentialLen)
	case strings.ContainsAny(c, "\r\n"):
		return errors.New("credential contains a line break (a trailing newline from a file?)")
	case !httpguts.ValidHeaderFieldValue(c):
		return errors.New("credential contains a control character")
	case strings.TrimSpace(c) != c:
		return errors.New("credential has leading or trailing white space")
	}
	return nil
}

// validateUpstream accepts absolute https URLs, and http ones for loopback
// hosts or when allowHTTP is set.
func validateUpstream(raw string, allowHTTP bool) (warnings []string, err error) {
	if raw == "" {
		return nil, errors.New("upstream is required (for example https://api.stripe.com)")
	}
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return nil, errors.New("not a URL")
	case u.Scheme != "https" && u.Scheme != "http":
		return nil, fmt.Errorf("scheme must be https (got %q)", u.Scheme)
	case u.Host == "" || u.Hostname() == "":
		return nil, errors.New("must be an absolute URL with a host")
	case u.User != nil:
		return nil, errors.New("must not carry user info; use credential and auth_type")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return nil, errors.New("must not carry a query or a fragment")
	}
	if u.Path != "" {
		if err := reqpath.Validate(u.EscapedPath()); err != nil {
			return nil, fmt.Errorf("path %w", err)
		}
	}
	if u.Scheme == "http" && !isLoopback(u.Hostname()) {
		if !allowHTTP {
			return nil, errors.New("http would send the credential in clear text; use https, or set allow_http=true")
		}
		warnings = append(warnings, "upstream uses plain http: the credential crosses the network unencrypted")
	}
	return warnings, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Headers a route may not set: they belong to the connection or the proxy.
var reservedHeaders = map[string]bool{
	"Host": true, "Connection": true, "Keep-Alive": true, "Proxy-Connection": true,
	"Proxy-Authenticate": true, "Proxy-Authorization": true, "Te": true, "Trailer": true,
	"Transfer-Encoding": true, "Upgrade": true, "Content-Length": true,
	"Forwarded": true, "X-Forwarded-For": true, "X-Forwarded-Host": true, "X-Forwarded-Proto": true,
}

func validateHeaderName(name string) error {
	if name == "" || len(name) > 128 {
		return errors.New("a header name must be 1-128 characters")
	}
	if !httpguts.ValidHeaderFieldName(name) {
		return fmt.Errorf("%q is not a valid header name", name)
	}
	if reservedHeaders[http.CanonicalHeaderKey(name)] {
		return fmt.Errorf("%q is a connection-level header and cannot be set", name)
	}
	return nil
}

func isQueryName(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}
