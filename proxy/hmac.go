package proxy

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/phantomvault/phantom/internal/reqpath"
	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/proxy/engine"
	"github.com/phantomvault/phantom/proxy/inject"
	"github.com/phantomvault/phantom/proxy/scrub"
)

// auth_type=hmac (internal/resolve/hmac.go): the engine signs each request
// itself. Its first answer on such a route asks for what the signature
// covers that only the proxy knows (ReasonHMACInputs, after the token's
// scope is checked and before anything is counted); the proxy reads the
// body if the route signs it, and asks again. What it then forwards is
// byte for byte what it sent: the query built by the same function on both
// sides, the body it read.

// resolveSigned asks the engine again for req, now with the HMAC inputs
// needs names, and keeps the query it sent on the grant for inject.HMAC.
func (s *Server) resolveSigned(sw *statusWriter, r *http.Request, rec *auditRecord, adm *admission, req resolve.Request, needs *resolve.HMACNeeds) (*engine.Decision, *refusal) {
	// The query as rewrite forwards it: the token's parameters out.
	in := &resolve.HMACInput{Query: reqpath.DropQueryParams(adm.rawQuery, func(_, value string) bool { return strings.Contains(value, adm.token) })}
	switch needs.Body {
	case resolve.HMACBodyNone:
	case resolve.HMACBodyRaw, resolve.HMACBodySHA256:
		limit := s.cfg.MaxLimitedBodyBytes
		if needs.Body == resolve.HMACBodyRaw {
			limit = min(limit, max(needs.MaxBody, 0))
		}
		body, ref := s.readSignedBody(sw, r, adm, limit)
		if ref != nil {
			return nil, ref
		}
		if needs.Body == resolve.HMACBodyRaw {
			in.Body = base64.StdEncoding.EncodeToString(body)
		} else {
			sum := sha256.Sum256(body)
			in.BodySHA256 = hex.EncodeToString(sum[:])
		}
	default: // a newer engine's
		return nil, refusalFor(resolve.ReasonHMACInputs)
	}
	req.HMAC = in
	d, ref := s.resolve(r, rec, req)
	if ref != nil {
		return d, ref
	}
	if d.Grant.HMAC == nil { // the route changed kind in between
		return nil, refusalFor(resolve.ReasonHMACInputs)
	}
	d.Grant.HMAC.Query = in.Query
	return d, nil
}

// readSignedBody reads r's body whole, at most limit bytes, into memory the
// proxy reserves first from the bound it keeps for limited bodies
// (limits_body.go), and makes those bytes r's body: what is forwarded is
// what was signed. The reservation is the admission's until the request
// ends (releaseSignedBody).
func (s *Server) readSignedBody(sw *statusWriter, r *http.Request, adm *admission, limit int64) ([]byte, *refusal) {
	if r.ContentLength > limit {
		return nil, signedBodyTooLarge()
	}
	reserve := limit
	if r.ContentLength >= 0 {
		reserve = r.ContentLength
	}
	client := clientKey(clientIP(r))
	adm.releaseSignedBody() // a body read before (an AWS form's action) is read again
	if !s.limitedBodies.acquire(client, reserve) {
		ref := refusalFor(resolve.ReasonOverloaded)
		ref.retryAfter = "1"
		return nil, ref
	}
	adm.releaseBody = func() { s.limitedBodies.release(client, reserve) }
	var stalled atomic.Bool
	rd := &stallReader{
		ReadCloser: http.MaxBytesReader(sw, r.Body, limit),
		rc:         http.NewResponseController(sw),
		timeout:    s.cfg.BodyStallTimeout,
		stalled:    &stalled,
	}
	body, err := io.ReadAll(rd)
	var maxErr *http.MaxBytesError
	switch {
	case errors.As(err, &maxErr):
		return nil, signedBodyTooLarge()
	case stalled.Load():
		return nil, refusalFor(resolve.ReasonBodyTimeout)
	case err != nil:
		return nil, badBody("the request body could not be read")
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	r.TransferEncoding = nil
	r.Header.Del("Content-Length") // the transport writes it from ContentLength
	return body, nil
}

func signedBodyTooLarge() *refusal {
	ref := refusalFor(resolve.ReasonBodyTooLarge)
	ref.message = "the route signs the request body, and it is larger than the route lets Phantom sign (hmac_max_body) or the proxy reads (-max-limited-body-bytes)"
	return ref
}

// releaseSignedBody gives back the memory of a body read for a signature.
func (a *admission) releaseSignedBody() {
	if a != nil && a.releaseBody != nil {
		a.releaseBody()
		a.releaseBody = nil
	}
}

// scrubberFor is the scrubber of g's request. An hmac route's wires hold
// this request's signature, so its scrubber would serve no other request:
// it is built afresh, around the first wire, instead of filling the cache.
func (s *Server) scrubberFor(g *Grant, style inject.Style) *scrub.Scrubber {
	wires := style.Wires()
	for _, m := range g.Mask { // earlier credentials that still work upstream
		wires = append(wires, scrub.Wire{Value: m})
	}
	if g.AuthType != resolve.AuthHMAC {
		return s.scrubbers.For(g.Credential, wires...)
	}
	return scrub.New(wires[0].Value, wires[1:]...) // the signature is always there
}
