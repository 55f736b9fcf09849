// Package sigv4test verifies SigV4 signatures as AWS does, with the real
// secret: for stand-in upstreams in tests. (The AWS SDK's own signer does
// the same in the SDK tests, e2e/sdk.)
package sigv4test

import (
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/phantomvault/phantom/internal/sigv4"
)

// Verify checks r's signature (and, for a signed streaming body, every
// chunk's) with secret and service, as received with body: it signs a copy
// of r with only the headers r's signature names, at r's X-Amz-Date, and
// compares. keyID is the access key id the signature must name.
func Verify(r *http.Request, body []byte, keyID, secret, service string) error {
	auth := r.Header.Get("Authorization")
	c, ok := sigv4.FromAuthorization(auth)
	if !ok || c.AccessKeyID != keyID || c.Service != service {
		return errors.New("no SigV4 credential of the key id and service")
	}
	_, signedList, _ := strings.Cut(auth, "SignedHeaders=")
	signedList, _, _ = strings.Cut(signedList, ",")
	s := &sigv4.Signer{Key: sigv4.SigningKey(secret, c.Date, c.Region, service), AccessKeyID: keyID, Date: c.Date, Region: c.Region, Service: service}
	cp, err := http.NewRequest(r.Method, "http://"+r.Host+r.URL.RequestURI(), nil)
	if err != nil {
		return err
	}
	cp.URL.RawPath = r.URL.RawPath
	for _, h := range strings.Split(signedList, ";") {
		switch h {
		case "host":
		case "content-length":
			cp.ContentLength = r.ContentLength
		default:
			cp.Header[http.CanonicalHeaderKey(h)] = r.Header.Values(h)
		}
	}
	date := r.Header.Get("X-Amz-Date")
	if !strings.HasPrefix(date, c.Date) {
		return errors.New("X-Amz-Date is not on the credential's day")
	}
	payload := r.Header.Get("X-Amz-Content-Sha256")
	switch {
	case payload == "":
		payload = sigv4.HexSHA256(body)
	case len(payload) == 64 && payload != sigv4.HexSHA256(body):
		return errors.New("the body does not match X-Amz-Content-Sha256")
	}
	seed, err := s.SignRequest(cp, date, payload, r.Header.Get("X-Amz-Security-Token"), !strings.HasPrefix(service, "s3"))
	if err != nil {
		return err
	}
	if cp.Header.Get("Authorization") != auth {
		return errors.New("the signature does not verify")
	}
	if payload == sigv4.StreamingSigned || payload == sigv4.StreamingSignedTrailer {
		// Signing the chunks again with the real key must give what came.
		again, err := io.ReadAll(s.ResignChunks(io.NopCloser(strings.NewReader(string(body))), date, seed, payload == sigv4.StreamingSignedTrailer))
		if err != nil || string(again) != string(body) {
			return errors.New("a chunk signature does not verify")
		}
	}
	return nil
}
