package plugin

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"

	"github.com/phantomvault/phantom/internal/resolve"
)

// The engine signs each request of an hmac route itself: it renders the
// route's message from the method and path it authorized, its own clock,
// and what the proxy sent (the query as forwarded, the body or its hash),
// so a token scoped to GET /v1/orders never gets a signature over another
// method or path, and the secret never leaves Vault.

// hmacPlaceholders are the names hmac_message may use.
var hmacPlaceholders = []string{"timestamp", "method", "path", "query", "path_query", "body", "body_sha256", "key_id"}

// hmacTemplate is a parsed hmac_message: literal text and placeholders,
// alternating (a placeholder's part holds its name).
type hmacTemplate struct {
	parts []hmacPart
}

type hmacPart struct {
	text        string
	placeholder bool
}

// parseHMACTemplate parses a message template: {name} is a placeholder,
// \n a newline, \\ a backslash, \{ and \} braces; anything else is itself.
func parseHMACTemplate(s string) (*hmacTemplate, error) {
	if s == "" {
		return nil, errors.New("is required: what is signed, for example {timestamp}{method}{path_query}{body}")
	}
	t := &hmacTemplate{}
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			t.parts = append(t.parts, hmacPart{text: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '\\':
			if i+1 == len(s) {
				return nil, errors.New(`ends in a lone \`)
			}
			i++
			switch s[i] {
			case 'n':
				lit.WriteByte('\n')
			case '\\', '{', '}':
				lit.WriteByte(s[i])
			default:
				return nil, fmt.Errorf(`\%c is not an escape: use \n, \\, \{ or \}`, s[i])
			}
		case '{':
			end := strings.IndexByte(s[i:], '}')
			if end < 0 {
				return nil, errors.New("a { is not closed (write \\{ for a brace)")
			}
			name := s[i+1 : i+end]
			if !slices.Contains(hmacPlaceholders, name) {
				return nil, fmt.Errorf("unknown placeholder {%s}; known: {%s}", name, strings.Join(hmacPlaceholders, "}, {"))
			}
			flush()
			t.parts = append(t.parts, hmacPart{text: name, placeholder: true})
			i += end
		case '}':
			return nil, errors.New("a } opens nothing (write \\} for a brace)")
		default:
			lit.WriteByte(c)
		}
	}
	flush()
	return t, nil
}

func (t *hmacTemplate) uses(name string) bool {
	return slices.Contains(t.parts, hmacPart{text: name, placeholder: true})
}

// bodyNeed is what of the body the message covers.
func (t *hmacTemplate) bodyNeed() string {
	switch {
	case t.uses("body"):
		return resolve.HMACBodyRaw
	case t.uses("body_sha256"):
		return resolve.HMACBodySHA256
	}
	return resolve.HMACBodyNone
}

func (t *hmacTemplate) render(values map[string]string) []byte {
	var b []byte
	for _, p := range t.parts {
		if p.placeholder {
			b = append(b, values[p.text]...)
		} else {
			b = append(b, p.text...)
		}
	}
	return b
}

// hmacNeeds is what the proxy must send for a request on r.
func (r *routeEntry) hmacNeeds() *resolve.HMACNeeds {
	need := resolve.HMACBodyNone
	if t, err := parseHMACTemplate(r.HMAC.Message); err == nil {
		need = t.bodyNeed()
	}
	n := &resolve.HMACNeeds{Body: need}
	if need == resolve.HMACBodyRaw {
		n.MaxBody = r.HMAC.MaxBody
	}
	return n
}

// signHMAC signs rr on r at now, or returns the denial: the inputs needed
// when the proxy sent none, bad_request when they do not fit.
func (r *routeEntry) signHMAC(rr resolveRequest, now time.Time, t *tokenEntry) (*resolve.HMACSignature, *resolve.Answer) {
	if rr.hmac == nil {
		a := deny(resolve.ReasonHMACInputs, "the route signs each request: send hmac with what hmac_needs names", t)
		a.HMACNeeds = r.hmacNeeds()
		return nil, a
	}
	bad := func(msg string) (*resolve.HMACSignature, *resolve.Answer) {
		return nil, deny(resolve.ReasonBadRequest, msg, t)
	}
	h := r.HMAC
	tmpl, err := parseHMACTemplate(h.Message)
	if err != nil {
		return bad("the route's hmac_message does not parse")
	}
	upstream, err := url.Parse(r.Upstream)
	if err != nil {
		return bad("the route's upstream does not parse")
	}
	key, err := r.hmacKey()
	if err != nil {
		return bad("the route's credential does not decode")
	}
	in := rr.hmac
	if !validQuery(in.Query) {
		return bad("hmac.query must be a query string as forwarded: no '?', '#', space or control character")
	}
	ts := formatHMACTime(now, h.TimestampFormat)
	grant := resolve.HMACGrant{TimestampQuery: h.TimestampQuery, SignatureQuery: h.SignatureQuery}
	query := grant.SignedQuery(in.Query, ts)
	path := resolve.ForwardPath(upstream, rr.path)
	pathQuery := path
	if query != "" {
		pathQuery += "?" + query
	}
	values := map[string]string{
		"timestamp": ts, "method": rr.method, "path": path, "query": query, "path_query": pathQuery, "key_id": h.KeyID,
	}
	switch tmpl.bodyNeed() {
	case resolve.HMACBodyRaw:
		body, err := base64.StdEncoding.DecodeString(in.Body)
		if err != nil {
			return bad("hmac.body must be standard base64")
		}
		if int64(len(body)) > h.MaxBody {
			return bad("hmac.body is larger than the route's hmac_max_body")
		}
		sum := sha256.Sum256(body)
		values["body"], values["body_sha256"] = string(body), hex.EncodeToString(sum[:])
	case resolve.HMACBodySHA256:
		if len(in.BodySHA256) != 64 || strings.ToLower(in.BodySHA256) != in.BodySHA256 || !isHex(in.BodySHA256) {
			return bad("hmac.body_sha256 must be the body's SHA-256 in lower-case hex")
		}
		values["body_sha256"] = in.BodySHA256
	}
	newHash := sha256.New
	if h.Hash == "sha512" {
		newHash = sha512.New
	}
	return &resolve.HMACSignature{Timestamp: ts, Signature: signWith(newHash, key, tmpl.render(values), h.Encoding)}, nil
}

func signWith(newHash func() hash.Hash, key, message []byte, encoding string) string {
	mac := hmac.New(newHash, key)
	mac.Write(message)
	sum := mac.Sum(nil)
	if encoding == "base64" {
		return base64.StdEncoding.EncodeToString(sum)
	}
	return hex.EncodeToString(sum)
}

func formatHMACTime(now time.Time, format string) string {
	switch format {
	case "unix_ms":
		return strconv.FormatInt(now.UnixMilli(), 10)
	case "rfc3339":
		return now.UTC().Format(time.RFC3339)
	}
	return strconv.FormatInt(now.Unix(), 10)
}

// validQuery: what the proxy forwards as a query never holds these.
func validQuery(q string) bool {
	for i := 0; i < len(q); i++ {
		if c := q[i]; c <= ' ' || c == 0x7f || c == '#' || c == '?' && i == 0 {
			return false
		}
	}
	return true
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil
}

// hmacResolveField is resolve's hmac field.
func hmacResolveField() *framework.FieldSchema {
	return &framework.FieldSchema{
		Type: framework.TypeMap,
		Description: "For a route of auth_type hmac, what the signature covers that only the proxy knows: " +
			"query (as forwarded, without '?'), body (standard base64) or body_sha256 (hex), as hmac_needs asks.",
		DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
	}
}

// hmacInput reads the hmac field of a resolve request as Vault decoded it
// from JSON: absent, or an object of string fields.
func hmacInput(v any) (*resolve.HMACInput, bool) {
	if v == nil {
		return nil, true
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, false
	}
	in := &resolve.HMACInput{}
	for k, p := range map[string]*string{"query": &in.Query, "body": &in.Body, "body_sha256": &in.BodySHA256} {
		if raw, present := m[k]; present {
			s, ok := raw.(string)
			if !ok {
				return nil, false
			}
			*p = s
		}
	}
	return in, true
}
