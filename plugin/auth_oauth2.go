package plugin

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"golang.org/x/net/http/httpguts"
)

// Exchanged kinds: the route holds long-lived OAuth2 client secrets or a
// refresh token; the engine trades them at token_url for a short-lived
// access token (exchange.go, exchange_oauth2.go), and the proxy gets only
// that, sent as Authorization: Bearer.
const (
	authOAuth2ClientCredentials = "oauth2_client_credentials" // RFC 6749 §4.4
	authOAuth2RefreshToken      = "oauth2_refresh_token"      // RFC 6749 §6
)

// oauth2Settings are an oauth2_* route's settings. ClientSecret and
// RefreshToken are write-only: reads show their fingerprints.
type oauth2Settings struct {
	TokenURL     string   `json:"token_url"`
	ClientID     string   `json:"client_id"`
	ClientSecret string   `json:"client_secret,omitempty"`
	Scopes       []string `json:"scopes,omitempty"`
	Audience     string   `json:"audience,omitempty"`
	RefreshToken string   `json:"refresh_token,omitempty"`
}

func isOAuth2(authType string) bool {
	return authType == authOAuth2ClientCredentials || authType == authOAuth2RefreshToken
}

// oauth2FieldNames are every field of the oauth2 kinds; oauth2Secrets the
// write-only ones.
var (
	oauth2FieldNames = []string{"token_url", "client_id", "client_secret", "scopes", "audience", "refresh_token"}
	oauth2Secrets    = []string{"client_secret", "refresh_token"}
)

func oauth2Fields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		"token_url": {
			Type:        framework.TypeString,
			Description: "auth_type=oauth2_*: the OAuth2 token endpoint the engine gets access tokens from; https unless loopback or allow_http. Changing it requires sending the route's secrets again.",
		},
		"client_id": {
			Type:        framework.TypeString,
			Description: "auth_type=oauth2_*: the OAuth2 client id. Changing it requires sending the route's secrets again.",
		},
		"client_secret": {
			Type:         framework.TypeString,
			Description:  "auth_type=oauth2_*: the OAuth2 client secret (required for oauth2_client_credentials, optional for oauth2_refresh_token), sent to token_url by HTTP Basic. Write-only, and it never leaves Vault: the proxy gets only access tokens.",
			DisplayAttrs: &framework.DisplayAttributes{Name: "Client secret", Sensitive: true},
		},
		"scopes": {
			Type:        framework.TypeCommaStringSlice,
			Description: "auth_type=oauth2_* and google_service_account (required there): scopes to ask for, sent space-separated. Changing them requires sending the route's secrets again.",
		},
		"audience": {
			Type:        framework.TypeString,
			Description: "auth_type=oauth2_*: an audience parameter some token endpoints want (Auth0). Changing it requires sending the route's secrets again.",
		},
		"refresh_token": {
			Type:         framework.TypeString,
			Description:  "auth_type=oauth2_refresh_token: the refresh token. Write-only and never leaves Vault; a rotated one from the endpoint replaces it in the engine's storage.",
			DisplayAttrs: &framework.DisplayAttributes{Name: "Refresh token", Sensitive: true},
		},
	}
}

// setOAuth2 applies a write's oauth2 fields. sent reports whether every
// secret the route holds came with this write, which a write that changes
// the destination needs (deliveryChanges).
func (r *routeEntry) setOAuth2(d *framework.FieldData) (sent bool, err error) {
	if !isOAuth2(r.AuthType) {
		for _, f := range oauth2FieldNames {
			_, ok := d.GetOk(f)
			switch {
			case !ok || f == "scopes" && r.AuthType == authGoogleServiceAccount: // setGoogle's
			case f == "scopes":
				return false, fmt.Errorf("scopes applies only to auth_type=%s, %s or %s", authOAuth2ClientCredentials, authOAuth2RefreshToken, authGoogleServiceAccount)
			default:
				return false, fmt.Errorf("%s applies only to auth_type=%s or %s", f, authOAuth2ClientCredentials, authOAuth2RefreshToken)
			}
		}
		r.OAuth2 = nil
		return false, nil
	}
	if _, ok := d.GetOk("credential"); ok {
		return false, errors.New("an oauth2 route's secrets are client_secret and refresh_token, not credential")
	}
	settings := oauth2Settings{}
	if r.OAuth2 != nil {
		settings = *r.OAuth2 // a copy: the stored route shares the old one
	}
	r.OAuth2, r.Credential = &settings, ""
	str := map[string]*string{"token_url": &settings.TokenURL, "client_id": &settings.ClientID, "audience": &settings.Audience,
		"client_secret": &settings.ClientSecret, "refresh_token": &settings.RefreshToken}
	for name, p := range str {
		if v, ok := d.GetOk(name); ok {
			s := v.(string)
			if !slices.Contains(oauth2Secrets, name) {
				s = strings.TrimSpace(s)
			}
			*p = s
		}
	}
	settings.TokenURL = strings.TrimSuffix(settings.TokenURL, "/")
	if v, ok := d.GetOk("scopes"); ok {
		settings.Scopes = cleanList(v.([]string))
	}
	sent = true
	for _, name := range oauth2Secrets {
		if _, ok := d.GetOk(name); *str[name] != "" && !ok {
			sent = false
		}
	}
	return sent, nil
}

// validateOAuth2 checks an oauth2 route's settings.
func (r *routeEntry) validateOAuth2() (warnings []string, err error) {
	o := r.OAuth2
	if o == nil || o.TokenURL == "" || o.ClientID == "" {
		return nil, fmt.Errorf("auth_type=%s needs token_url and client_id", r.AuthType)
	}
	if r.AuthHeader != "" || r.AuthQueryParam != "" || r.AuthFormat != "" {
		return nil, errors.New("oauth2 routes send Authorization: Bearer <access token>; auth_header, auth_query_param and auth_format do not apply")
	}
	if warnings, err = validateUpstream(o.TokenURL, r.AllowHTTP); err != nil {
		return nil, fmt.Errorf("token_url: %w", err)
	}
	for i := range warnings {
		warnings[i] = "token_url: " + warnings[i]
	}
	if !printable(o.ClientID) || len(o.ClientID) > 512 || !printable(o.Audience) || len(o.Audience) > 512 {
		return nil, errors.New("client_id and audience must be at most 512 printable characters")
	}
	if err := validateScopes(o.Scopes); err != nil {
		return nil, err
	}
	switch {
	case r.AuthType == authOAuth2ClientCredentials && o.ClientSecret == "":
		return nil, errors.New("auth_type=oauth2_client_credentials needs client_secret")
	case r.AuthType == authOAuth2ClientCredentials && o.RefreshToken != "":
		return nil, errors.New("refresh_token applies only to auth_type=oauth2_refresh_token")
	case r.AuthType == authOAuth2RefreshToken && o.RefreshToken == "":
		return nil, errors.New("auth_type=oauth2_refresh_token needs refresh_token")
	}
	for _, s := range []struct{ name, value string }{{"client_secret", o.ClientSecret}, {"refresh_token", o.RefreshToken}} {
		if s.value == "" {
			continue
		}
		if err := validateCredential(s.value); err != nil { // its messages name credential
			return nil, errors.New(s.name + strings.TrimPrefix(err.Error(), "credential"))
		}
	}
	return warnings, nil
}

// validateScopes checks each scope is an RFC 6749 §3.3 scope-token:
// 1*( %x21 / %x23-5B / %x5D-7E ).
func validateScopes(scopes []string) error {
	for _, s := range scopes {
		if strings.ContainsAny(s, "\"\\") || !printable(s) || strings.Contains(s, " ") {
			return fmt.Errorf("scopes: %q is not a scope token (printable, no space, quote or backslash)", s)
		}
	}
	return nil
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 && s[i] != ' ' || s[i] == 0x7f {
			return false
		}
	}
	return httpguts.ValidHeaderFieldValue(s)
}

// deliveryChanges names the oauth2 settings that differ between o and
// old: each decides where the secrets go, or what the token they buy may
// do, so the secrets are bound to them like the upstream.
func (o *oauth2Settings) deliveryChanges(old *oauth2Settings) []string {
	if o == nil || old == nil {
		return nil // a change of auth_type, which deliveryChanges names
	}
	var changed changes
	changed.add("token_url", o.TokenURL != old.TokenURL)
	changed.add("client_id", o.ClientID != old.ClientID)
	changed.add("scopes", !slices.Equal(o.Scopes, old.Scopes))
	changed.add("audience", o.Audience != old.Audience)
	return changed
}

// oauth2PublicData adds what reads show of an oauth2 route: the settings,
// the secrets as fingerprints.
func (r *routeEntry) oauth2PublicData(d map[string]any) {
	o := r.OAuth2
	if o == nil {
		return
	}
	delete(d, "credential_fingerprint")
	d["token_url"] = o.TokenURL
	d["client_id"] = o.ClientID
	d["scopes"] = nonNil(o.Scopes)
	d["audience"] = o.Audience
	if o.ClientSecret != "" {
		d["client_secret_fingerprint"] = fingerprint(o.ClientSecret)
	}
	if o.RefreshToken != "" {
		d["refresh_token_fingerprint"] = fingerprint(o.RefreshToken)
	}
}

// secretNames is what a write must send again to change where the route
// sends its credential.
func (r *routeEntry) secretNames() string {
	switch {
	case r.AuthType == authAWSSigV4:
		return "secret_access_key"
	case r.AuthType == authGitHubApp:
		return "private_key"
	case r.AuthType == authGoogleServiceAccount:
		return "service_account_key"
	case r.OAuth2 != nil && r.OAuth2.ClientSecret != "" && r.OAuth2.RefreshToken != "":
		return "client_secret and refresh_token"
	case r.OAuth2 != nil && r.OAuth2.RefreshToken != "":
		return "refresh_token"
	case r.OAuth2 != nil:
		return "client_secret"
	}
	return "credential"
}

// exchangeBinding identifies everything an access token was fetched with
// and is sent to: a token fetched under other settings (or for an earlier
// life of the route) is never used.
func (r *routeEntry) exchangeBinding() string {
	if g := r.GitHubApp; g != nil {
		return hashFields(append([]string{r.ID, r.AuthType, r.Upstream}, g.binding()...)...)
	}
	if g := r.Google; g != nil {
		return hashFields(append([]string{r.ID, r.AuthType, r.Upstream}, g.binding()...)...)
	}
	o := r.OAuth2
	return hashFields(r.ID, r.AuthType, r.Upstream, o.TokenURL, o.ClientID, o.ClientSecret,
		strings.Join(o.Scopes, " "), o.Audience, o.RefreshToken)
}

// refreshLineage identifies the refresh token an admin wrote: the tokens
// the endpoint rotates it into descend from it, and are used instead of it
// until an admin writes another.
func (r *routeEntry) refreshLineage() string {
	o := r.OAuth2
	if o == nil {
		return hashFields(r.ID) // a kind without refresh tokens
	}
	return hashFields(r.ID, o.TokenURL, o.ClientID, o.RefreshToken)
}

// refreshToken is the refresh token an admin wrote, if the kind has one.
func (r *routeEntry) refreshToken() string {
	if r.OAuth2 == nil {
		return ""
	}
	return r.OAuth2.RefreshToken
}

func hashFields(fields ...string) string {
	h := sha256.New()
	for _, f := range fields {
		fmt.Fprintf(h, "%d:%s;", len(f), f)
	}
	return hex.EncodeToString(h.Sum(nil))
}
