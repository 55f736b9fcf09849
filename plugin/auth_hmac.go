package plugin

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"

	"github.com/phantomvault/phantom/internal/resolve"
)

// auth_type=hmac: the credential is an HMAC secret that the engine signs
// each request with (hmac_sign.go); it never leaves Vault. These are the
// route's settings for it: what is signed (a template), how, and where the
// proxy puts the signature, the timestamp, the key id and the passphrase.

const authHMAC = resolve.AuthHMAC

const (
	defaultHMACMaxBody = 64 << 10
	maxHMACMaxBody     = 1 << 20 // the body crosses Vault in the resolve call
	// minHMACPublicLen: the key id and passphrase are masked wherever they
	// appear in a response; a very short one would mask ordinary text.
	minHMACPublicLen = 8
)

// hmacSettings are a route's settings for auth_type=hmac. KeyID and
// Passphrase are not the signing secret, but reads show only their
// fingerprints.
type hmacSettings struct {
	Message          string `json:"message"`
	Hash             string `json:"hash"`            // sha256, sha512
	Encoding         string `json:"encoding"`        // hex, base64
	SecretEncoding   string `json:"secret_encoding"` // raw, base64
	SignatureHeader  string `json:"signature_header,omitempty"`
	SignatureQuery   string `json:"signature_query,omitempty"`
	TimestampHeader  string `json:"timestamp_header,omitempty"`
	TimestampQuery   string `json:"timestamp_query,omitempty"`
	TimestampFormat  string `json:"timestamp_format"` // unix, unix_ms, rfc3339
	KeyID            string `json:"key_id,omitempty"`
	KeyIDHeader      string `json:"key_id_header,omitempty"`
	Passphrase       string `json:"passphrase,omitempty"`
	PassphraseHeader string `json:"passphrase_header,omitempty"`
	MaxBody          int64  `json:"max_body"`
}

// hmacStringFields maps each string field of a route to its setting. Every one but
// hmac_max_body decides what is signed or where it is sent, so the
// credential is bound to them (deliveryChanges).
var hmacStringFields = []struct {
	name, desc string
	sensitive  bool
	get        func(*hmacSettings) *string
}{
	{"hmac_message", "auth_type=hmac: what is signed, a template (see path-help): {timestamp} {method} {path} {query} {path_query} {body} {body_sha256} {key_id}, \\n a newline, \\\\ a backslash, \\{ a brace. Example: {timestamp}{method}{path_query}{body}.", false, func(h *hmacSettings) *string { return &h.Message }},
	{"hmac_hash", "auth_type=hmac: sha256 (default) or sha512.", false, func(h *hmacSettings) *string { return &h.Hash }},
	{"hmac_encoding", "auth_type=hmac: how the signature is written, hex (default) or base64.", false, func(h *hmacSettings) *string { return &h.Encoding }},
	{"hmac_secret_encoding", "auth_type=hmac: raw (default: the credential's bytes are the key) or base64 (the credential is base64-decoded first, as Coinbase's secrets).", false, func(h *hmacSettings) *string { return &h.SecretEncoding }},
	{"hmac_signature_header", "auth_type=hmac: the header the signature goes in, for example CB-ACCESS-SIGN. Exactly one of this and hmac_signature_query.", false, func(h *hmacSettings) *string { return &h.SignatureHeader }},
	{"hmac_signature_query", "auth_type=hmac: the query parameter the signature goes in, appended last, for example signature.", false, func(h *hmacSettings) *string { return &h.SignatureQuery }},
	{"hmac_timestamp_header", "auth_type=hmac: the header the timestamp goes in, for example CB-ACCESS-TIMESTAMP.", false, func(h *hmacSettings) *string { return &h.TimestampHeader }},
	{"hmac_timestamp_query", "auth_type=hmac: the query parameter the timestamp goes in, for example timestamp; it is part of {query}.", false, func(h *hmacSettings) *string { return &h.TimestampQuery }},
	{"hmac_timestamp_format", "auth_type=hmac: unix (seconds, default), unix_ms or rfc3339. The engine's clock stamps each request.", false, func(h *hmacSettings) *string { return &h.TimestampFormat }},
	{"hmac_key_id", "auth_type=hmac: the API key id the upstream wants beside the signature. Write-only: reads show its fingerprint; masked in responses.", true, func(h *hmacSettings) *string { return &h.KeyID }},
	{"hmac_key_id_header", "auth_type=hmac: the header hmac_key_id goes in, for example X-MBX-APIKEY.", false, func(h *hmacSettings) *string { return &h.KeyIDHeader }},
	{"hmac_passphrase", "auth_type=hmac: a passphrase sent as it is (Coinbase's). Write-only: reads show its fingerprint; masked in responses.", true, func(h *hmacSettings) *string { return &h.Passphrase }},
	{"hmac_passphrase_header", "auth_type=hmac: the header hmac_passphrase goes in, for example CB-ACCESS-PASSPHRASE.", false, func(h *hmacSettings) *string { return &h.PassphraseHeader }},
}

func hmacFields() map[string]*framework.FieldSchema {
	fields := map[string]*framework.FieldSchema{
		"hmac_max_body": {
			Type:        framework.TypeInt,
			Description: fmt.Sprintf("auth_type=hmac with {body}: the largest body the proxy sends the engine to sign, in bytes (default %d, at most %d); a larger one is refused with 413.", defaultHMACMaxBody, maxHMACMaxBody),
		},
	}
	for _, f := range hmacStringFields {
		fs := &framework.FieldSchema{Type: framework.TypeString, Description: f.desc}
		if f.sensitive {
			fs.DisplayAttrs = &framework.DisplayAttributes{Sensitive: true}
		}
		fields[f.name] = fs
	}
	return fields
}

// setHMAC applies a write's hmac_* fields: only on auth_type=hmac, whose
// settings start from the defaults.
func (r *routeEntry) setHMAC(d *framework.FieldData) error {
	if r.AuthType != authHMAC {
		r.HMAC = nil
		for name := range hmacFields() {
			if _, ok := d.GetOk(name); ok {
				return fmt.Errorf("%s applies only to auth_type=hmac", name)
			}
		}
		return nil
	}
	if r.HMAC == nil {
		r.HMAC = &hmacSettings{Hash: "sha256", Encoding: "hex", SecretEncoding: "raw", TimestampFormat: "unix", MaxBody: defaultHMACMaxBody}
	} else {
		cp := *r.HMAC // the stored route's, which deliveryChanges compares with
		r.HMAC = &cp
	}
	for _, f := range hmacStringFields {
		if v, ok := d.GetOk(f.name); ok {
			s := v.(string)
			if !f.sensitive && f.name != "hmac_message" {
				s = strings.TrimSpace(s)
			}
			*f.get(r.HMAC) = s
		}
	}
	if v, ok := d.GetOk("hmac_max_body"); ok {
		r.HMAC.MaxBody = int64(v.(int))
	}
	return nil
}

// validateHMAC checks an hmac route's settings, and returns warnings.
func (r *routeEntry) validateHMAC() (warnings []string, err error) {
	h := r.HMAC
	switch {
	case h == nil:
		return nil, errors.New("auth_type=hmac needs hmac_message and hmac_signature_header or hmac_signature_query")
	case r.AuthHeader != "" || r.AuthQueryParam != "" || r.AuthFormat != "":
		return nil, errors.New("auth_type=hmac places what it sends with the hmac_* fields; auth_header, auth_query_param and auth_format do not apply")
	case r.Limits != nil && r.Limits.UsageFormat != "":
		return nil, errors.New("auth_type=hmac cannot take usage_format: its limits edit the body, which is signed")
	}
	tmpl, err := parseHMACTemplate(h.Message)
	if err != nil {
		return nil, fmt.Errorf("hmac_message: %w", err)
	}
	if err := oneOf("hmac_hash", h.Hash, "sha256", "sha512"); err != nil {
		return nil, err
	}
	if err := oneOf("hmac_encoding", h.Encoding, "hex", "base64"); err != nil {
		return nil, err
	}
	if err := oneOf("hmac_timestamp_format", h.TimestampFormat, "unix", "unix_ms", "rfc3339"); err != nil {
		return nil, err
	}
	if err := oneOf("hmac_secret_encoding", h.SecretEncoding, "raw", "base64"); err != nil {
		return nil, err
	}
	if _, err := r.hmacKey(); err != nil {
		return nil, err
	}
	if (h.SignatureHeader == "") == (h.SignatureQuery == "") {
		return nil, errors.New("auth_type=hmac needs exactly one of hmac_signature_header and hmac_signature_query")
	}
	if h.TimestampHeader != "" && h.TimestampQuery != "" {
		return nil, errors.New("give at most one of hmac_timestamp_header and hmac_timestamp_query")
	}
	if h.SignatureQuery != "" && h.SignatureQuery == h.TimestampQuery {
		return nil, errors.New("hmac_signature_query and hmac_timestamp_query must differ")
	}
	for _, q := range []struct{ field, name string }{{"hmac_signature_query", h.SignatureQuery}, {"hmac_timestamp_query", h.TimestampQuery}} {
		if q.name != "" && !isQueryName(q.name) {
			return nil, fmt.Errorf("%s must be 1-64 characters of A-Z a-z 0-9 _ - .", q.field)
		}
	}
	if err := h.validatePublic("hmac_key_id", h.KeyID, h.KeyIDHeader, tmpl.uses("key_id")); err != nil {
		return nil, err
	}
	if err := h.validatePublic("hmac_passphrase", h.Passphrase, h.PassphraseHeader, false); err != nil {
		return nil, err
	}
	if err := r.validateHMACHeaders(); err != nil {
		return nil, err
	}
	if h.MaxBody < 0 || h.MaxBody > maxHMACMaxBody {
		return nil, fmt.Errorf("hmac_max_body must be between 0 and %d bytes", maxHMACMaxBody)
	}
	if !tmpl.uses("timestamp") && (h.TimestampQuery == "" || !tmpl.uses("query") && !tmpl.uses("path_query")) {
		warnings = append(warnings, "hmac_message covers no timestamp: a signature seen once can be replayed for as long as the upstream accepts it")
	}
	if h.TimestampHeader == "" && h.TimestampQuery == "" && tmpl.uses("timestamp") {
		warnings = append(warnings, "hmac_message signs {timestamp} but neither hmac_timestamp_header nor hmac_timestamp_query sends it")
	}
	return warnings, nil
}

// validatePublic checks the key id or the passphrase and its header: both
// or neither, unless the message signs the value without sending it.
func (h *hmacSettings) validatePublic(field, value, header string, signed bool) error {
	switch {
	case value == "" && (header != "" || signed):
		return fmt.Errorf("%s is required by %s_header or by hmac_message", field, field)
	case value == "":
		return nil
	case header == "" && !signed:
		return fmt.Errorf("%s needs %s_header, the header it is sent in", field, field)
	case len(value) < minHMACPublicLen:
		return fmt.Errorf("%s must be at least %d characters: it is masked wherever it appears in a response", field, minHMACPublicLen)
	}
	if err := validateCredential(value); err != nil {
		return fmt.Errorf("%s: %s", field, strings.TrimPrefix(err.Error(), "credential "))
	}
	return nil
}

// validateHMACHeaders checks the headers the proxy sets: valid names, none
// twice, none a static header.
func (r *routeEntry) validateHMACHeaders() error {
	h := r.HMAC
	seen := map[string]string{}
	for _, f := range []struct{ field, name string }{
		{"hmac_signature_header", h.SignatureHeader}, {"hmac_timestamp_header", h.TimestampHeader},
		{"hmac_key_id_header", h.KeyIDHeader}, {"hmac_passphrase_header", h.PassphraseHeader},
	} {
		if f.name == "" {
			continue
		}
		if err := validateHeaderName(f.name); err != nil {
			return fmt.Errorf("%s: %w", f.field, err)
		}
		canonical := http.CanonicalHeaderKey(f.name)
		if other, ok := seen[canonical]; ok {
			return fmt.Errorf("%s and %s name the same header", other, f.field)
		}
		seen[canonical] = f.field
		for name := range r.Headers {
			if http.CanonicalHeaderKey(name) == canonical {
				return fmt.Errorf("headers: %q is where %s puts its value", name, f.field)
			}
		}
	}
	return nil
}

func oneOf(field, v string, allowed ...string) error {
	for _, a := range allowed {
		if v == a {
			return nil
		}
	}
	return fmt.Errorf("%s must be one of %s (got %q)", field, strings.Join(allowed, ", "), v)
}

// hmacKey is the signing key: the credential, base64-decoded if so set.
func (r *routeEntry) hmacKey() ([]byte, error) {
	if r.HMAC.SecretEncoding != "base64" {
		return []byte(r.Credential), nil
	}
	key, err := base64.StdEncoding.DecodeString(r.Credential)
	if err != nil {
		key, err = base64.RawStdEncoding.DecodeString(r.Credential)
	}
	if err != nil || len(key) == 0 {
		return nil, errors.New("credential is not base64, as hmac_secret_encoding=base64 says")
	}
	return key, nil
}

// hmacDeliveryChanges names the hmac settings that differ between h and
// old: all but hmac_max_body decide what is signed or where it goes.
func (h *hmacSettings) deliveryChanges(old *hmacSettings) []string {
	if h == nil || old == nil {
		return nil // a change of auth_type, which deliveryChanges names
	}
	var changed []string
	for _, f := range hmacStringFields {
		if *f.get(h) != *f.get(old) {
			changed = append(changed, f.name)
		}
	}
	return changed
}

// publicData adds what reads show of an hmac route: its settings, the key
// id and passphrase as fingerprints.
func (h *hmacSettings) publicData(d map[string]any) {
	if h == nil {
		return
	}
	for _, f := range hmacStringFields {
		v := *f.get(h)
		if f.sensitive {
			if v != "" {
				d[f.name+"_fingerprint"] = fingerprint(v)
			}
			continue
		}
		d[f.name] = v
	}
	d["hmac_max_body"] = h.MaxBody
}

// hmacRouteGrant is what the proxy gets of an hmac route: where to put
// what the engine signs, and no credential.
func (r *routeEntry) hmacRouteGrant() *resolve.RouteGrant {
	h := r.HMAC
	needs := r.hmacNeeds()
	return &resolve.RouteGrant{
		Upstream: r.Upstream, AuthType: authHMAC, Headers: r.Headers,
		HMAC: &resolve.HMACGrant{
			SignatureHeader: h.SignatureHeader, SignatureQuery: h.SignatureQuery,
			TimestampHeader: h.TimestampHeader, TimestampQuery: h.TimestampQuery,
			KeyID: h.KeyID, KeyIDHeader: h.KeyIDHeader,
			Passphrase: h.Passphrase, PassphraseHeader: h.PassphraseHeader,
			Body: needs.Body, MaxBody: needs.MaxBody,
		},
	}
}

// hmacRebind refuses a write that changes where or how an hmac route
// sends things (deliveryChanges) without sending its key id and passphrase
// again: like the credential, they never follow a new destination.
func (r *routeEntry) hmacRebind(d *framework.FieldData, stored *routeEntry) error {
	if stored == nil || r.HMAC == nil || len(r.deliveryChanges(stored)) == 0 {
		return nil
	}
	var unsent []string
	for _, f := range []struct{ field, value string }{{"hmac_key_id", r.HMAC.KeyID}, {"hmac_passphrase", r.HMAC.Passphrase}} {
		if _, sent := d.GetOk(f.field); f.value != "" && !sent {
			unsent = append(unsent, f.field)
		}
	}
	if len(unsent) == 0 {
		return nil
	}
	return fmt.Errorf("this write changes where or how the route sends what it signs: send %s again in the same write", strings.Join(unsent, " and "))
}
