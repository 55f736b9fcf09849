package proxy

import (
	"net/http"
	"net/url"
	"strings"
	"sync"
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
func awsAction(r *http.Request, path, rawQuery string, now time.Time) (awsSigned, *refusal) {
	query, err := url.ParseQuery(rawQuery)
	if err != nil {
		query = nil // read as S3 would not be: no action (refused where one must be told)
	}
	var cred sigv4.Credential
	if c, ok := sigv4.FromAuthorization(r.Header.Get("Authorization")); ok {
		cred = c
	} else if c, signed, expires, ok := sigv4.Presigned(query); ok {
		if !now.Before(expires) || signed.After(now.Add(presignSkew)) {
			return awsSigned{}, refusalWith(resolve.ReasonExpired, "the presigned URL has expired, or says it was signed in the future (X-Amz-Date and X-Amz-Expires)")
		}
		cred = c
	} else {
		return awsSigned{}, nil
	}
	for name, values := range r.Header {
		if len(values) > 1 && strings.HasPrefix(name, "X-Amz-") {
			return awsSigned{}, refusalWith(resolve.ReasonBadRequest, "a request signed for AWS may carry each X-Amz- header once ("+name+" is repeated)")
		}
	}
	if query == nil {
		return awsSigned{}, nil
	}
	return awsSigned{service: cred.Service, action: sigv4.Action(cred.Service, r.Method, path, query, r.Header, nil), query: query}, nil
}

// awsSigned is what admit reads of a request an AWS SDK signed: zero for
// any other request, and for one whose query does not parse.
type awsSigned struct {
	service string     // the service the SDK signed for
	action  string     // the API operation, as the URL and headers tell it
	query   url.Values // the query, parsed
}

// maxFormAction bounds a body read for the operation it may name.
const maxFormAction = 64 << 10

// formAction is the action of an AWS request whose body may name it (the
// query protocol's Action in a url-encoded body: STS, SNS, EC2), read whole
// (at most maxFormAction) before the engine is asked; the admission's for
// any other request. The bytes read are what is forwarded. What AWS makes
// of a body is not for the proxy to guess: every body of a service whose
// operations are named is read as a form, but a JSON one when the URL
// names no operation (a JSON protocol's, named by X-Amz-Target), and a
// body that does not parse as one tells no action.
func (s *Server) formAction(sw *statusWriter, r *http.Request, adm *admission) (string, *refusal) {
	if !mayNameAction(r, adm.aws) {
		return adm.aws.action, nil
	}
	body, ref := s.readSignedBody(sw, r, adm, maxFormAction) // hmac.go
	if ref != nil {
		return "", ref
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return "", nil
	}
	return sigv4.Action(adm.aws.service, r.Method, adm.path, adm.aws.query, r.Header, form), nil
}

// mayNameAction reports whether r's body may name its operation.
func mayNameAction(r *http.Request, aws awsSigned) bool {
	if aws.service == "" || !sigv4.NamesActions(aws.service) || r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody {
		return false
	}
	media := mediaTypeOf(r.Header.Get("Content-Type"))
	if media != "application/json" && !strings.HasPrefix(media, "application/x-amz-json-") {
		return true
	}
	return aws.query.Has("Action") || aws.query.Has("Operation")
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

// checkCopySource asks the engine whether the token may read the object an
// S3 copy reads, named in a header: else the path scope would say nothing
// of what is copied. Refused, g's reservation is settled.
func (s *Server) checkCopySource(r *http.Request, rec *auditRecord, adm *admission, g *Grant) *refusal {
	src := copySource(r, g)
	if src == "" {
		return nil
	}
	if ref := s.alsoAllowed(r, rec, resolve.Request{Token: adm.token, Method: http.MethodGet, Path: src, ClientIP: adm.clientIP, Action: "s3:GetObject"}); ref != nil {
		return s.settleRefused(g, rec, ref)
	}
	return nil
}

// alsoAllowed asks the engine whether the token may also make req, a
// request that is checked and never made: what an allowed answer reserved
// is settled at once.
func (s *Server) alsoAllowed(r *http.Request, rec *auditRecord, req resolve.Request) *refusal {
	d, ref := s.resolve(r, rec, req)
	if d != nil && d.Grant != nil && d.Grant.Limits != nil {
		s.settle(&exchange{grant: (*Grant)(d.Grant), rec: rec})
	}
	return ref
}

// settleRefused settles what g's resolve reserved, for a request refused
// after it, and returns the refusal.
func (s *Server) settleRefused(g *Grant, rec *auditRecord, ref *refusal) *refusal {
	if g.Limits != nil {
		s.settle(&exchange{grant: g, rec: rec})
	}
	return ref
}

// batchDeleteWorkers bounds the resolves of one batch delete in flight:
// enough for the engine client to batch them.
const batchDeleteWorkers = 16

// checkBatchDelete asks the engine whether the token may DELETE each key an
// S3 DeleteObjects names in its body (read whole, at most
// sigv4.MaxDeleteBody, and forwarded as read): else the path scope would
// say nothing of what is deleted. Each key is one resolve, as IAM wants
// s3:DeleteObject for each. Refused, g's reservation is settled.
func (s *Server) checkBatchDelete(sw *statusWriter, r *http.Request, rec *auditRecord, adm *admission, g *Grant) *refusal {
	if g.AWS == nil || !strings.HasPrefix(g.AWS.Service, "s3") || r.Method != http.MethodPost {
		return nil
	}
	refused := func(ref *refusal) *refusal { return s.settleRefused(g, rec, ref) }
	query, err := url.ParseQuery(adm.rawQuery)
	if err != nil {
		return refused(refusalWith(resolve.ReasonBadRequest, "the query of a POST to S3 is not valid percent-encoding"))
	}
	bucket, ok := sigv4.BatchDelete(r.Method, adm.path, query)
	if !ok {
		return nil
	}
	body, ref := s.readSignedBody(sw, r, adm, sigv4.MaxDeleteBody) // hmac.go
	if ref != nil {
		return refused(ref)
	}
	paths, err := sigv4.DeleteKeys(bucket, body)
	if err != nil {
		return refused(refusalWith(resolve.ReasonBadRequest, err.Error()))
	}
	refs := make([]*refusal, len(paths))
	errored := make([]bool, len(paths))
	slots := make(chan struct{}, batchDeleteWorkers)
	var wg sync.WaitGroup
	for i, path := range paths {
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer func() { <-slots; wg.Done() }()
			own := &auditRecord{RequestID: rec.RequestID} // resolve fills it in; rec is not this goroutine's
			refs[i] = s.alsoAllowed(r, own, resolve.Request{Token: adm.token, Method: http.MethodDelete, Path: path, ClientIP: adm.clientIP, Action: "s3:DeleteObject"})
			errored[i] = own.Decision == "error"
		}()
	}
	wg.Wait()
	for i, ref := range refs {
		if ref != nil {
			if errored[i] {
				rec.Decision = "error"
			}
			if ref.status == http.StatusForbidden {
				ref.message = "a key the batch delete names is outside the phantom token's scope"
			}
			return refused(ref)
		}
	}
	return nil
}
