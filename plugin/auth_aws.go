package plugin

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"

	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/internal/scope"
	"github.com/phantomvault/phantom/internal/sigv4"
)

// authAWSSigV4 routes sign each request with SigV4. The secret access key
// is the route's credential (written as secret_access_key): it never leaves
// the engine, which hands the proxy only the signing key of the day, region
// and service (routeGrant).
const authAWSSigV4 = resolve.AuthAWSSigV4

// awsSettings are an aws_sigv4 route's signing settings besides its secret.
type awsSettings struct {
	AccessKeyID  string `json:"access_key_id"`
	Region       string `json:"region"`
	Service      string `json:"service"`
	SessionToken string `json:"session_token,omitempty"` // write-only, like the secret
}

func awsRouteFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		"access_key_id": {
			Type:        framework.TypeString,
			Description: "auth_type=aws_sigv4: the AWS access key id requests are signed with. Changing it requires sending secret_access_key again.",
		},
		"secret_access_key": {
			Type:         framework.TypeString,
			Description:  "auth_type=aws_sigv4: the AWS secret access key. Write-only, and it never leaves Vault: the proxy gets only the signing key derived for one day, region and service.",
			DisplayAttrs: &framework.DisplayAttributes{Name: "Secret access key", Sensitive: true},
		},
		"session_token": {
			Type:         framework.TypeString,
			Description:  "auth_type=aws_sigv4: a static session token sent as X-Amz-Security-Token with temporary credentials. Write-only.",
			DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
		},
		"region": {
			Type:        framework.TypeString,
			Description: "auth_type=aws_sigv4: the region requests are signed for, for example us-east-1. Changing it requires sending secret_access_key again.",
		},
		"service": {
			Type:        framework.TypeString,
			Description: "auth_type=aws_sigv4: the signing name of the service, for example s3, bedrock, sqs, dynamodb. Changing it requires sending secret_access_key again.",
		},
		"allowed_actions": {
			Type:        framework.TypeCommaStringSlice,
			Description: "auth_type=aws_sigv4: the API operations tokens may call, as <service>:<Operation> globs, for example s3:GetObject,s3:ListObjectsV2 or s3:Get*. Empty: any operation the paths and methods allow. A request whose operation the proxy cannot tell is refused when set.",
		},
	}
}

// setAWS applies a write's SigV4 fields. sent reports whether the secret
// came with the write.
func (r *routeEntry) setAWS(d *framework.FieldData) (sent bool, err error) {
	secret, sent := d.GetOk("secret_access_key")
	if r.AuthType != authAWSSigV4 {
		for _, f := range []string{"access_key_id", "secret_access_key", "session_token", "region", "service", "allowed_actions"} {
			if _, ok := d.GetOk(f); ok {
				return false, fmt.Errorf("%s applies only to auth_type=%s", f, authAWSSigV4)
			}
		}
		r.AWS, r.AllowedActions = nil, nil
		return false, nil
	}
	if _, ok := d.GetOk("credential"); ok {
		return false, errors.New("an aws_sigv4 route's secret is secret_access_key, not credential")
	}
	// A copy: the route before this write shares the stored settings, and
	// awsChanges compares the two.
	settings := awsSettings{}
	if r.AWS != nil {
		settings = *r.AWS
	}
	r.AWS = &settings
	if sent {
		r.Credential = secret.(string)
	}
	if v, ok := d.GetOk("access_key_id"); ok {
		r.AWS.AccessKeyID = strings.TrimSpace(v.(string))
	}
	if v, ok := d.GetOk("session_token"); ok {
		r.AWS.SessionToken = v.(string)
	}
	if v, ok := d.GetOk("region"); ok {
		r.AWS.Region = strings.TrimSpace(v.(string))
	}
	if v, ok := d.GetOk("service"); ok {
		r.AWS.Service = strings.TrimSpace(v.(string))
	}
	if v, ok := d.GetOk("allowed_actions"); ok {
		r.AllowedActions = cleanList(v.([]string))
	}
	return sent, nil
}

// validateAWS checks an aws_sigv4 route's settings.
func (r *routeEntry) validateAWS() error {
	a := r.AWS
	if a == nil || a.AccessKeyID == "" || a.Region == "" || a.Service == "" {
		return errors.New("auth_type=aws_sigv4 needs access_key_id, secret_access_key, region and service")
	}
	if r.AuthHeader != "" || r.AuthQueryParam != "" || r.AuthFormat != "" {
		return errors.New("auth_type=aws_sigv4 signs the Authorization header itself; auth_header, auth_query_param and auth_format do not apply")
	}
	if !isAWSName(a.AccessKeyID, "") || len(a.AccessKeyID) < 16 || len(a.AccessKeyID) > 128 {
		return errors.New("access_key_id must be 16-128 letters and digits")
	}
	if !isAWSName(a.Region, "-") || !isAWSName(a.Service, "-") {
		return errors.New("region and service must be lower-case letters, digits and '-' (for example us-east-1 and s3)")
	}
	if err := validateCredential(r.Credential); err != nil { // its messages name credential
		return errors.New("secret_access_key" + strings.TrimPrefix(err.Error(), "credential"))
	}
	if a.SessionToken != "" {
		if err := validateCredential(a.SessionToken); err != nil {
			return errors.New("session_token" + strings.TrimPrefix(err.Error(), "credential"))
		}
	}
	for _, p := range r.AllowedActions {
		if err := scope.ValidateAction(p); err != nil {
			return fmt.Errorf("allowed_actions: %w", err)
		}
		if service, _, _ := strings.Cut(p, ":"); service != a.Service {
			return fmt.Errorf("allowed_actions: %q names another service than the route's (%s)", p, a.Service)
		}
	}
	if len(r.AllowedActions) > 0 {
		if err := r.actionsReadable(); err != nil {
			return err
		}
	}
	for name := range r.Headers {
		switch http.CanonicalHeaderKey(name) {
		case "X-Amz-Date", "X-Amz-Security-Token", "X-Amz-Content-Sha256":
			return fmt.Errorf("headers: %q is set by the signature", name)
		}
	}
	return nil
}

// actionsReadable refuses allowed_actions where the proxy would read S3's
// operations wrong: it reads them from the agent's path as path-style
// (/<bucket>/<key>), so the upstream must add no path and not be a
// bucket's own host, or a GET of an object would read as a bucket's list.
func (r *routeEntry) actionsReadable() error {
	if !strings.HasPrefix(r.AWS.Service, "s3") {
		return nil
	}
	u, err := url.Parse(r.Upstream)
	if err != nil {
		return err
	}
	host := u.Hostname()
	if u.Path != "" || strings.Contains(host, ".s3.") && !strings.HasPrefix(host, "s3.") ||
		strings.Contains(host, ".s3-") && !strings.HasPrefix(host, "s3-") {
		return errors.New("allowed_actions on S3 needs a path-style upstream, the service's endpoint without a bucket or a path (https://s3.<region>.amazonaws.com)")
	}
	return nil
}

// awsWarnings are what an admin should know of a valid aws_sigv4 route.
func (r *routeEntry) awsWarnings() []string {
	if r.AuthType != authAWSSigV4 || r.AWS.Service != "sts" || len(r.AllowedActions) > 0 {
		return nil
	}
	return []string{"a token of an sts route without allowed_actions can ask STS for real temporary credentials " +
		"(GetSessionToken, AssumeRole), which then work without Phantom: set allowed_actions"}
}

func isAWSName(s, extra string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || extra == "" && 'A' <= c && c <= 'Z' || strings.IndexByte(extra, c) >= 0) {
			return false
		}
	}
	return s != ""
}

// awsChanges names the SigV4 settings that differ between old and r: each
// decides where a signature is good (another key id, region or service), so
// the secret is bound to them like the upstream.
func (r *routeEntry) awsChanges(old *routeEntry) []string {
	a, b := r.AWS, old.AWS
	if a == nil || b == nil {
		return nil // auth_type changed, which counts already
	}
	var changed []string
	for _, c := range []struct {
		field  string
		differ bool
	}{
		{"access_key_id", a.AccessKeyID != b.AccessKeyID},
		{"region", a.Region != b.Region},
		{"service", a.Service != b.Service},
		{"session_token", a.SessionToken != b.SessionToken},
	} {
		if c.differ {
			changed = append(changed, c.field)
		}
	}
	return changed
}

// awsPublicData adds what reads show of an aws_sigv4 route: never the
// secret or the session token, a fingerprint of each.
func (r *routeEntry) awsPublicData(d map[string]any) {
	if r.AWS == nil {
		return
	}
	delete(d, "credential_fingerprint")
	d["access_key_id"] = r.AWS.AccessKeyID
	d["secret_access_key_fingerprint"] = fingerprint(r.Credential)
	d["region"] = r.AWS.Region
	d["service"] = r.AWS.Service
	d["allowed_actions"] = nonNil(r.AllowedActions)
	if r.AWS.SessionToken != "" {
		d["session_token_fingerprint"] = fingerprint(r.AWS.SessionToken)
	}
}

// awsGrant puts the signing key of now's day on g, in place of the secret.
func (r *routeEntry) awsGrant(g *resolve.RouteGrant, now time.Time) {
	a := r.AWS
	day := now.UTC().Format(sigv4.DateFormat)
	g.Credential = hex.EncodeToString(sigv4.SigningKey(r.Credential, day, a.Region, a.Service))
	g.AuthName, g.AuthFormat = "Authorization", resolve.Placeholder
	g.AWS = &resolve.AWSGrant{AccessKeyID: a.AccessKeyID, Region: a.Region, Service: a.Service, Date: day, SessionToken: a.SessionToken}
}
