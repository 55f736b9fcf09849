package proxy

import (
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/internal/sigv4"
)

// presignSkew is how far ahead of the proxy's clock a presigned URL may
// say it was signed: AWS's own allowance.
const presignSkew = 15 * time.Minute

// awsAction is the API operation of a request an AWS SDK signed ("" for
// any other request), for the engine to check against allowed_actions. It
// is read for the service the SDK signed for, which the engine holds to
// the route's. A presigned URL past its X-Amz-Expires, or signed in the
// future, is refused: the proxy's signature would otherwise outlive the
// one the agent was given. So is a repeated X-Amz- header: AWS's reading
// of two (x-amz-copy-source twice) is not the proxy's, which checks one.
func awsAction(r *http.Request, path, rawQuery string, now time.Time) (action, service string, ref *refusal) {
	query, err := url.ParseQuery(rawQuery)
	if err != nil {
		query = nil // read as S3 would not be: no action (refused where one must be told)
	}
	var cred sigv4.Credential
	if c, ok := sigv4.FromAuthorization(r.Header.Get("Authorization")); ok {
		cred = c
	} else if c, signed, expires, ok := sigv4.Presigned(query); ok {
		if !now.Before(expires) || signed.After(now.Add(presignSkew)) {
			return "", "", refusalWith(resolve.ReasonExpired, "the presigned URL has expired, or says it was signed in the future (X-Amz-Date and X-Amz-Expires)")
		}
		cred = c
	} else {
		return "", "", nil
	}
	for name, values := range r.Header {
		if len(values) > 1 && strings.HasPrefix(name, "X-Amz-") {
			return "", "", refusalWith(resolve.ReasonBadRequest, "a request signed for AWS may carry each X-Amz- header once ("+name+" is repeated)")
		}
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
// request. The bytes read are what is forwarded. A POST without a
// Content-Type is read as a form too: what AWS makes of it is not for the
// proxy to guess.
func (s *Server) formAction(sw *statusWriter, r *http.Request, adm *admission) (string, *refusal) {
	mediaType, _, _ := strings.Cut(r.Header.Get("Content-Type"), ";")
	mediaType = strings.TrimSpace(mediaType)
	// Read even when the URL names an action: one in each is ambiguous.
	if adm.awsService == "" || strings.HasPrefix(adm.awsService, "s3") || r.Method != http.MethodPost ||
		mediaType != "" && !strings.EqualFold(mediaType, "application/x-www-form-urlencoded") {
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
