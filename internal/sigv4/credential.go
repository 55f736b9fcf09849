package sigv4

import (
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Credential is the access key id an SDK signed with (the agent's phantom
// token) and the scope it named, as read from its Authorization header or
// a presigned URL.
type Credential struct {
	AccessKeyID, Date, Region, Service string
}

// FromAuthorization reads the credential of a SigV4 Authorization value
// ("AWS4-HMAC-SHA256 Credential=<id>/<day>/<region>/<service>/aws4_request,
// SignedHeaders=..., Signature=...").
func FromAuthorization(v string) (Credential, bool) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(v), Algorithm+" ")
	if !ok {
		return Credential{}, false
	}
	for part := range strings.SplitSeq(rest, ",") {
		if value, ok := strings.CutPrefix(strings.TrimSpace(part), "Credential="); ok {
			return parseCredential(value)
		}
	}
	return Credential{}, false
}

// IsSigV4 reports whether an Authorization value claims SigV4.
func IsSigV4(v string) bool { return strings.HasPrefix(strings.TrimSpace(v), Algorithm+" ") }

func parseCredential(v string) (Credential, bool) {
	parts := strings.Split(v, "/")
	if len(parts) != 5 || parts[4] != "aws4_request" || parts[0] == "" {
		return Credential{}, false
	}
	return Credential{AccessKeyID: parts[0], Date: parts[1], Region: parts[2], Service: parts[3]}, true
}

// The query parameters of a presigned URL's signature (the JavaScript SDK
// names the payload too).
var presignParams = []string{"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
	"X-Amz-SignedHeaders", "X-Amz-Signature", "X-Amz-Security-Token", "X-Amz-Content-Sha256"}

// IsPresignParam reports whether a query parameter belongs to a presigned
// URL's signature (which the proxy replaces with its own).
func IsPresignParam(name string) bool {
	for _, p := range presignParams {
		if strings.EqualFold(name, p) {
			return true
		}
	}
	return false
}

// Presigned reads the credential of a presigned URL's query, when it was
// signed and when it stops being valid. ok is false when the query is not
// a presigned SigV4 URL; a presigned URL without a valid X-Amz-Date and
// X-Amz-Expires (at most 7 days, as AWS allows) has zero times.
func Presigned(q url.Values) (c Credential, signed, expires time.Time, ok bool) {
	if q.Get("X-Amz-Algorithm") != Algorithm {
		return Credential{}, time.Time{}, time.Time{}, false
	}
	if c, ok = parseCredential(q.Get("X-Amz-Credential")); !ok {
		return Credential{}, time.Time{}, time.Time{}, false
	}
	signed, err := time.Parse(TimeFormat, q.Get("X-Amz-Date"))
	seconds, err2 := strconv.Atoi(q.Get("X-Amz-Expires"))
	if err != nil || err2 != nil || seconds < 1 || seconds > 7*24*3600 {
		return c, time.Time{}, time.Time{}, true
	}
	return c, signed, signed.Add(time.Duration(seconds) * time.Second), true
}
