package proxy

import (
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/internal/sigv4"
)

// awsAction is the API operation of a request an AWS SDK signed ("" for
// any other request), for the engine to check against allowed_actions. It
// is read for the service the SDK signed for, which the engine holds to
// the route's. A presigned URL past its X-Amz-Expires is refused: the
// proxy's signature would otherwise outlive the one the agent was given.
func awsAction(r *http.Request, path, rawQuery string, now time.Time) (action, service string, ref *refusal) {
	query, err := url.ParseQuery(rawQuery)
	if err != nil {
		query = nil // read as S3 would not be: no action (refused where one must be told)
	}
	var cred sigv4.Credential
	if c, ok := sigv4.FromAuthorization(r.Header.Get("Authorization")); ok {
		cred = c
	} else if c, expires, ok := sigv4.Presigned(query); ok {
		if !now.Before(expires) {
			return "", "", refusalWith(resolve.ReasonExpired, "the presigned URL has expired (X-Amz-Date and X-Amz-Expires)")
		}
		cred = c
	} else {
		return "", "", nil
	}
	if query == nil {
		return "", "", nil
	}
	return sigv4.Action(cred.Service, r.Method, path, query, r.Header, nil), cred.Service, nil
}

// maxFormAction bounds a url-encoded body read for its Action.
const maxFormAction = 64 << 10

// formAction is the action of an AWS query-protocol request that names it
// in its url-encoded body (STS, SNS, SQS's older clients, EC2), read whole
// (at most maxFormAction) before the engine is asked; "" for any other
// request. The bytes read are what is forwarded.
func (s *Server) formAction(sw *statusWriter, r *http.Request, adm *admission) (string, *refusal) {
	mediaType, _, _ := strings.Cut(r.Header.Get("Content-Type"), ";")
	// Read even when the URL names an action: one in each is ambiguous.
	if adm.awsService == "" || strings.HasPrefix(adm.awsService, "s3") || r.Method != http.MethodPost ||
		!strings.EqualFold(strings.TrimSpace(mediaType), "application/x-www-form-urlencoded") {
		return adm.action, nil
	}
	body, ref := s.readSignedBody(sw, r, adm, maxFormAction) // hmac.go
	if ref != nil {
		return "", ref
	}
	form, err := url.ParseQuery(string(body))
	query, err2 := url.ParseQuery(adm.rawQuery)
	if err != nil || err2 != nil {
		return "", nil
	}
	return sigv4.Action(adm.awsService, r.Method, adm.path, query, r.Header, form), nil
}

// copySource is the object an S3 copy reads, which the token must be
// allowed to GET as well ("" when the request copies nothing or the route
// is not S3's).
func copySource(r *http.Request, g *Grant) string {
	if g.AWS == nil || g.AWS.Service != "s3" {
		return ""
	}
	return sigv4.CopySource(r.Header)
}
