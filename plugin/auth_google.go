package plugin

import (
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
)

// auth_type=google_service_account: the route holds a Google service
// account's JSON key; the engine signs a JWT with its private key and trades
// it at the key's token_uri (the JWT bearer grant, RFC 7523) for an access
// token (exchange_google.go), which is all the proxy gets, sent as
// Authorization: Bearer.
const authGoogleServiceAccount = "google_service_account"

const (
	defaultGoogleTokenURI = "https://oauth2.googleapis.com/token"
	maxGoogleKeyLen       = 16 << 10 // a key file is about 2.3 KiB
)

// googleSettings are a google_service_account route's settings. Key (the
// JSON key file as written) is write-only: reads show its fingerprint and
// what it names, ClientEmail and TokenURI, read from it at the write.
type googleSettings struct {
	Key         string   `json:"service_account_key,omitempty"`
	ClientEmail string   `json:"client_email"`
	TokenURI    string   `json:"token_uri"`
	Scopes      []string `json:"scopes"`
	Subject     string   `json:"subject,omitempty"`
}

// googleFieldNames are the fields of this kind alone (scopes it shares with
// the oauth2 kinds: auth_oauth2.go).
var googleFieldNames = []string{"service_account_key", "subject"}

func googleFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		"service_account_key": {
			Type:         framework.TypeString,
			Description:  "auth_type=google_service_account: the service account's JSON key file, its content (service_account_key=@key.json). Write-only, and its private key never leaves Vault: the engine signs JWTs with it at the key's token_uri and the proxy gets only access tokens.",
			DisplayAttrs: &framework.DisplayAttributes{Name: "Service account key", Sensitive: true},
		},
		"subject": {
			Type:        framework.TypeString,
			Description: "auth_type=google_service_account: the user to act as, by domain-wide delegation (the JWT's sub). Changing it requires sending service_account_key again.",
		},
	}
}

// googleKey is what the engine reads of a service account's JSON key.
type googleKey struct {
	Type         string `json:"type"`
	ClientEmail  string `json:"client_email"`
	PrivateKey   string `json:"private_key"`
	PrivateKeyID string `json:"private_key_id"`
	TokenURI     string `json:"token_uri"`
}

// parseGoogleKey reads a JSON key file and its private key. Its errors
// never quote the file.
func parseGoogleKey(s string) (*googleKey, *rsa.PrivateKey, error) {
	var k googleKey
	switch {
	case len(s) > maxGoogleKeyLen:
		return nil, nil, fmt.Errorf("service_account_key is longer than %d bytes", maxGoogleKeyLen)
	case json.Unmarshal([]byte(s), &k) != nil:
		return nil, nil, errors.New("service_account_key is not a JSON key file (send its content: service_account_key=@key.json)")
	case !distinctNames(s):
		// Go matches field names in any case, and the last one wins: a
		// file could show a reader one token_uri and the engine another.
		return nil, nil, errors.New("service_account_key names a field twice (in any mix of case)")
	case k.Type != "service_account":
		return nil, nil, errors.New(`service_account_key: its type must be "service_account" (a service account's JSON key)`)
	case k.ClientEmail == "" || k.PrivateKey == "" || k.PrivateKeyID == "":
		return nil, nil, errors.New("service_account_key needs client_email, private_key and private_key_id")
	case !printable(k.ClientEmail) || len(k.ClientEmail) > 512 || !strings.Contains(k.ClientEmail, "@"):
		return nil, nil, errors.New("service_account_key: its client_email is not an email address")
	case !printable(k.PrivateKeyID) || len(k.PrivateKeyID) > 128:
		return nil, nil, errors.New("service_account_key: its private_key_id must be at most 128 printable characters")
	}
	key, err := parseRSAKey(k.PrivateKey) // auth_github_app.go
	if err != nil {
		return nil, nil, fmt.Errorf("service_account_key: its %w", err)
	}
	k.TokenURI = strings.TrimSpace(orDefault(k.TokenURI, defaultGoogleTokenURI))
	return &k, key, nil
}

// setGoogle applies a write's google_service_account fields. sent reports
// whether the key came with this write.
func (r *routeEntry) setGoogle(d *framework.FieldData) (sent bool, err error) {
	if applies, err := kindFields(d, r.AuthType, authGoogleServiceAccount, googleFieldNames, "service_account_key"); !applies {
		r.Google = nil
		return false, err
	}
	g := copied(r.Google)
	r.Google, r.Credential = g, ""
	if v, ok := d.GetOk("service_account_key"); ok {
		k, _, err := parseGoogleKey(v.(string))
		if err != nil {
			return false, err
		}
		g.Key, g.ClientEmail, g.TokenURI, sent = v.(string), k.ClientEmail, k.TokenURI, true
	}
	if v, ok := d.GetOk("scopes"); ok {
		g.Scopes = cleanList(v.([]string))
	}
	if v, ok := d.GetOk("subject"); ok {
		g.Subject = strings.TrimSpace(v.(string))
	}
	return sent, nil
}

// validateGoogle checks a google_service_account route's settings (the key
// itself was read when it was written).
func (r *routeEntry) validateGoogle() (warnings []string, err error) {
	g := r.Google
	if g == nil || g.Key == "" || len(g.Scopes) == 0 {
		return nil, errors.New("auth_type=google_service_account needs service_account_key and scopes (such as https://www.googleapis.com/auth/cloud-platform)")
	}
	if r.AuthHeader != "" || r.AuthQueryParam != "" || r.AuthFormat != "" {
		return nil, errors.New("google_service_account routes send Authorization: Bearer <access token>; auth_header, auth_query_param and auth_format do not apply")
	}
	if warnings, err = validateUpstream(g.TokenURI, r.AllowHTTP); err != nil {
		return nil, fmt.Errorf("service_account_key: its token_uri: %w", err)
	}
	for i := range warnings {
		warnings[i] = "token_uri: " + warnings[i]
	}
	if err := validateScopes(g.Scopes); err != nil { // auth_oauth2.go
		return nil, err
	}
	if len(g.Subject) > 512 || !printable(g.Subject) || strings.Contains(g.Subject, " ") {
		return nil, errors.New("subject must be an email address: at most 512 printable characters, no space")
	}
	return warnings, nil
}

// deliveryChanges names the google_service_account settings that differ
// between g and old: each decides where the key's JWTs go or what the
// tokens may do.
func (g *googleSettings) deliveryChanges(old *googleSettings) []string {
	if g == nil || old == nil {
		return nil // a change of auth_type, which deliveryChanges names
	}
	var changed changes
	changed.add("token_uri", g.TokenURI != old.TokenURI)
	changed.add("client_email", g.ClientEmail != old.ClientEmail)
	changed.add("scopes", !slices.Equal(g.Scopes, old.Scopes))
	changed.add("subject", g.Subject != old.Subject)
	return changed
}

// googlePublicData adds what reads show of a google_service_account route.
func (r *routeEntry) googlePublicData(d map[string]any) {
	g := r.Google
	if g == nil {
		return
	}
	delete(d, "credential_fingerprint")
	d["client_email"], d["token_uri"], d["scopes"], d["subject"] = g.ClientEmail, g.TokenURI, nonNil(g.Scopes), g.Subject
	d["service_account_key_fingerprint"] = fingerprint(g.Key)
}

// binding is what of a google_service_account route an access token was
// fetched with.
func (g *googleSettings) binding() []string {
	return []string{g.Key, g.ClientEmail, g.TokenURI, strings.Join(g.Scopes, " "), g.Subject}
}

// distinctNames reports whether the JSON object s names each of its
// fields once, however their letters are cased.
func distinctNames(s string) bool {
	dec := json.NewDecoder(strings.NewReader(s))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return false
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		name, ok := tok.(string)
		if err != nil || !ok || seen[strings.ToLower(name)] {
			return false
		}
		seen[strings.ToLower(name)] = true
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			return false
		}
	}
	return true
}
