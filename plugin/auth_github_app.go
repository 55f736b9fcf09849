package plugin

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"

	"github.com/phantomvault/phantom/internal/resolve"
)

// auth_type=github_app: the route holds a GitHub App's private key; the
// engine signs a short JWT with it and trades that at
// <github_api_url>/app/installations/<installation_id>/access_tokens for an
// installation token (exchange_github_app.go), which is all the proxy gets,
// sent as Authorization: Bearer (the REST API) or, with send_as=basic, as
// the password of the user x-access-token (git over HTTPS to github.com,
// which takes no Bearer).
const authGitHubApp = "github_app"

const defaultGitHubAPIURL = "https://api.github.com"

// How a github_app route sends its installation token (send_as).
const (
	githubSendBearer = "bearer" // Authorization: Bearer <token>
	githubSendBasic  = "basic"  // Authorization: Basic base64(x-access-token:<token>)
)

// githubGitFormat is the Basic user:password git clients send github.com
// for an installation token.
const githubGitFormat = "x-access-token:" + resolve.Placeholder

// githubAppSettings are a github_app route's settings. PrivateKey is
// write-only: reads show its fingerprint.
type githubAppSettings struct {
	AppID          string            `json:"app_id"`
	InstallationID string            `json:"installation_id"`
	APIURL         string            `json:"github_api_url"`
	PrivateKey     string            `json:"private_key,omitempty"`
	Repositories   []string          `json:"repositories,omitempty"`
	Permissions    map[string]string `json:"permissions,omitempty"`
	SendAs         string            `json:"send_as,omitempty"` // "" (routes older than send_as) is bearer

	// variant and narrowedFrom (the route's own narrowing) are set on a
	// resolve's copy narrowed by its token (github_app_narrow.go), never
	// stored.
	variant, narrowedFrom string
}

var githubAppFieldNames = []string{"app_id", "installation_id", "github_api_url", "private_key", "repositories", "permissions", "send_as"}

func githubAppFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		"app_id": {
			Type:        framework.TypeString,
			Description: "auth_type=github_app: the GitHub App's id, the iss of the JWTs the engine signs.",
		},
		"installation_id": {
			Type:        framework.TypeString,
			Description: "auth_type=github_app: the installation whose tokens the engine gets. Changing it requires sending private_key again.",
		},
		"github_api_url": {
			Type:        framework.TypeString,
			Description: "auth_type=github_app: the GitHub API the token endpoint is on (default https://api.github.com; GitHub Enterprise Server: https://<host>/api/v3); https unless loopback or allow_http. Changing it requires sending private_key again.",
		},
		"private_key": {
			Type:         framework.TypeString,
			Description:  "auth_type=github_app: the GitHub App's RSA private key (PEM). Write-only, and it never leaves Vault: the engine signs JWTs with it and the proxy gets only installation tokens.",
			DisplayAttrs: &framework.DisplayAttributes{Name: "Private key", Sensitive: true},
		},
		"repositories": {
			Type:        framework.TypeCommaStringSlice,
			Description: "auth_type=github_app: repository names every installation token is narrowed to (default: all the installation's). Changing them requires sending private_key again.",
		},
		"permissions": {
			Type:        framework.TypeCommaStringSlice,
			Description: "auth_type=github_app: permissions every installation token is narrowed to, such as contents=read,issues=write (default: all the installation's). Changing them requires sending private_key again.",
		},
		"send_as": {
			Type:          framework.TypeString,
			Description:   "auth_type=github_app: how the proxy sends the installation token: bearer (default; Authorization: Bearer, for the REST API) or basic (Authorization: Basic x-access-token:<token>, what git over HTTPS to github.com takes). Changing it requires sending private_key again.",
			AllowedValues: []any{githubSendBearer, githubSendBasic},
		},
	}
}

// setGitHubApp applies a write's github_app fields. sent reports whether
// the private key came with this write.
func (r *routeEntry) setGitHubApp(d *framework.FieldData) (sent bool, err error) {
	if applies, err := kindFields(d, r.AuthType, authGitHubApp, githubAppFieldNames, "private_key"); !applies {
		r.GitHubApp = nil
		return false, err
	}
	g := copied(r.GitHubApp)
	r.GitHubApp, r.Credential = g, ""
	for name, p := range map[string]*string{"app_id": &g.AppID, "installation_id": &g.InstallationID, "github_api_url": &g.APIURL, "send_as": &g.SendAs} {
		if v, ok := d.GetOk(name); ok {
			*p = strings.TrimSpace(v.(string))
		}
	}
	g.APIURL = strings.TrimSuffix(orDefault(g.APIURL, defaultGitHubAPIURL), "/")
	g.SendAs = orDefault(g.SendAs, githubSendBearer)
	if v, ok := d.GetOk("private_key"); ok {
		g.PrivateKey, sent = v.(string), true
	}
	if v, ok := d.GetOk("repositories"); ok {
		g.Repositories = cleanList(v.([]string))
	}
	if v, ok := d.GetOk("permissions"); ok {
		if g.Permissions, err = parsePermissions(cleanList(v.([]string))); err != nil {
			return false, err
		}
	}
	return sent, nil
}

// parsePermissions reads name=level pairs, as a route and a mint take them.
func parsePermissions(pairs []string) (map[string]string, error) {
	perms := make(map[string]string, len(pairs))
	for _, kv := range pairs {
		k, val, found := strings.Cut(kv, "=")
		if !found {
			return nil, fmt.Errorf("permissions: %q is not name=level", kv)
		}
		perms[strings.TrimSpace(k)] = strings.TrimSpace(val)
	}
	return perms, nil
}

// checkRepositories and checkPermissions hold a route's or a mint's
// narrowing to what GitHub takes: repository names without their owner,
// and permission names at read, write or admin.
func checkRepositories(repos []string) error {
	for _, repo := range repos {
		if len(repo) > 100 || strings.Trim(repo, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != "" {
			return fmt.Errorf("repositories: %q is not a repository name (the name alone, without the owner)", repo)
		}
	}
	return nil
}

func checkPermissions(perms map[string]string) error {
	for k, v := range perms {
		if k == "" || len(k) > 64 || strings.Trim(k, "abcdefghijklmnopqrstuvwxyz_") != "" {
			return fmt.Errorf("permissions: %q is not a permission name", k)
		}
		if permissionLevel(v) == 0 {
			return fmt.Errorf("permissions: %s must be read, write or admin", k)
		}
	}
	return nil
}

// permissionLevel orders the levels a permission may have (0: none of them).
func permissionLevel(level string) int {
	return slices.Index([]string{"read", "write", "admin"}, level) + 1
}

// kindFields checks a write's fields against the route's kind: kind's own
// fields are refused on a route of another kind, and credential on one of
// kind, whose secret is secret. applies reports a route of kind.
func kindFields(d *framework.FieldData, authType, kind string, fields []string, secret string) (applies bool, err error) {
	if authType != kind {
		for _, f := range fields {
			if _, ok := d.GetOk(f); ok {
				return false, fmt.Errorf("%s applies only to auth_type=%s", f, kind)
			}
		}
		return false, nil
	}
	if _, ok := d.GetOk("credential"); ok {
		return false, fmt.Errorf("a %s route's secret is %s, not credential", kind, secret)
	}
	return true, nil
}

// copied is a copy of a kind's settings to change (the stored route shares
// the original), or new ones.
func copied[T any](p *T) *T {
	var v T
	if p != nil {
		v = *p
	}
	return &v
}

// validateExchanged checks an exchanged kind's settings.
func (r *routeEntry) validateExchanged() ([]string, error) {
	switch r.AuthType {
	case authGitHubApp:
		return r.validateGitHubApp()
	case authGoogleServiceAccount:
		return r.validateGoogle() // auth_google.go
	}
	return r.validateOAuth2()
}

// validateGitHubApp checks a github_app route's settings.
func (r *routeEntry) validateGitHubApp() (warnings []string, err error) {
	g := r.GitHubApp
	if g == nil || g.AppID == "" || g.InstallationID == "" || g.PrivateKey == "" {
		return nil, errors.New("auth_type=github_app needs app_id, installation_id and private_key")
	}
	if r.AuthHeader != "" || r.AuthQueryParam != "" || r.AuthFormat != "" {
		return nil, errors.New("github_app routes send the installation token as send_as says (bearer or basic); auth_header, auth_query_param and auth_format do not apply")
	}
	if g.SendAs != githubSendBearer && g.SendAs != githubSendBasic {
		return nil, fmt.Errorf("send_as must be %s (Authorization: Bearer, for the REST API) or %s (Basic x-access-token:<token>, for git over HTTPS)", githubSendBearer, githubSendBasic)
	}
	for _, f := range []struct{ name, value string }{{"app_id", g.AppID}, {"installation_id", g.InstallationID}} {
		if n, err := strconv.ParseUint(f.value, 10, 63); err != nil || n == 0 {
			return nil, fmt.Errorf("%s must be a positive number", f.name)
		}
	}
	if warnings, err = validateUpstream(g.APIURL, r.AllowHTTP); err != nil {
		return nil, fmt.Errorf("github_api_url: %w", err)
	}
	for i := range warnings {
		warnings[i] = "github_api_url: " + warnings[i]
	}
	if _, err := parseRSAKey(g.PrivateKey); err != nil {
		return nil, err
	}
	if err := checkRepositories(g.Repositories); err != nil {
		return nil, err
	}
	if err := checkPermissions(g.Permissions); err != nil {
		return nil, err
	}
	return warnings, nil
}

// parseRSAKey reads a PEM RSA private key, PKCS #1 (what GitHub hands out)
// or PKCS #8. Its errors never quote the key.
func parseRSAKey(s string) (*rsa.PrivateKey, error) {
	block, _ := pem.Decode([]byte(strings.TrimSpace(s)))
	if block == nil {
		return nil, errors.New("private_key is not a PEM private key")
	}
	switch block.Type {
	case "RSA PRIVATE KEY":
		if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
			return k, nil
		}
	case "PRIVATE KEY":
		if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
			if rk, ok := k.(*rsa.PrivateKey); ok {
				return rk, nil
			}
			return nil, errors.New("private_key must be an RSA key")
		}
	}
	return nil, errors.New("private_key is not a readable RSA private key (PEM, PKCS #1 or PKCS #8)")
}

// deliveryChanges names the github_app settings that differ between g and
// old: each decides where the key's JWTs go or what the tokens may do.
func (g *githubAppSettings) deliveryChanges(old *githubAppSettings) []string {
	if g == nil || old == nil {
		return nil // a change of auth_type, which deliveryChanges names
	}
	var changed changes
	changed.add("app_id", g.AppID != old.AppID)
	changed.add("installation_id", g.InstallationID != old.InstallationID)
	changed.add("github_api_url", g.APIURL != old.APIURL)
	changed.add("repositories", !slices.Equal(g.Repositories, old.Repositories))
	changed.add("permissions", !maps.Equal(g.Permissions, old.Permissions))
	changed.add("send_as", g.sendAs() != old.sendAs())
	return changed
}

// githubAppPublicData adds what reads show of a github_app route.
func (r *routeEntry) githubAppPublicData(d map[string]any) {
	g := r.GitHubApp
	if g == nil {
		return
	}
	delete(d, "credential_fingerprint")
	perms := map[string]string{}
	maps.Copy(perms, g.Permissions)
	d["app_id"], d["installation_id"], d["github_api_url"] = g.AppID, g.InstallationID, g.APIURL
	d["repositories"], d["permissions"] = nonNil(g.Repositories), perms
	d["private_key_fingerprint"] = fingerprint(g.PrivateKey)
	d["send_as"] = g.sendAs()
}

// sendAs is how the route sends its installation token.
func (g *githubAppSettings) sendAs() string {
	return orDefault(g.SendAs, githubSendBearer)
}

// injection is how the proxy sends an exchanged kind's access token: as a
// bearer key, or a github_app route's as git's Basic password.
func (g *githubAppSettings) injection() (authType, name, format string) {
	authType = authBearer
	if g != nil && g.sendAs() == githubSendBasic {
		authType, format = authBasic, githubGitFormat
	}
	name, format = resolve.Injection(authType, "", "", format)
	return authType, name, format
}

// githubAppBinding is what of a github_app route an installation token was
// fetched with.
func (g *githubAppSettings) binding() []string {
	fields := []string{g.AppID, g.InstallationID, g.APIURL, g.PrivateKey, strings.Join(g.Repositories, ","), permissionList(g.Permissions)}
	if g.variant != "" {
		fields = append(fields, g.narrowedFrom)
	}
	return fields
}

// revokesInstallationToken reports GitHub's DELETE /installation/token,
// which revokes the installation token it is sent with: the one every
// token of the route (and of its narrowing) shares, so one agent would cut
// off all the others until the engine's next fetch.
func revokesInstallationToken(method, path string) bool {
	return method == http.MethodDelete && strings.EqualFold(strings.TrimRight(path, "/"), "/installation/token")
}
