package inject

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/phantomvault/phantom/internal/reqpath"
	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/internal/sigv4"
	"github.com/phantomvault/phantom/proxy/scrub"
)

// MaxHashedBody bounds a body the proxy reads whole to hash, for a service
// other than S3 whose SDK sent no X-Amz-Content-Sha256 (JSON and query
// APIs, whose bodies are small).
const MaxHashedBody = 16 << 20

// RequestError is a request the proxy cannot sign as it came: the agent's
// to fix (400), never the upstream's.
type RequestError struct{ Err error }

func (e *RequestError) Error() string { return e.Err.Error() }
func (e *RequestError) Unwrap() error { return e.Err }

// SigV4 signs each request with AWS Signature Version 4, with the signing
// key of one day, region and service that the engine derived: the secret
// access key never reaches the proxy. The agent's own signature (made with
// any secret, over the proxy's host) is replaced; a streaming upload's
// chunks are signed again as they pass.
type SigV4 struct {
	signer       sigv4.Signer
	keyHex       string
	sessionToken string
	now          func() time.Time
}

func newSigV4(g *resolve.Grant) (*SigV4, error) {
	key, err := hex.DecodeString(g.Credential)
	if err != nil || g.AWS == nil {
		return nil, errors.New("the grant has no signing key")
	}
	a := g.AWS
	return &SigV4{
		signer:       sigv4.Signer{Key: key, AccessKeyID: a.AccessKeyID, Date: a.Date, Region: a.Region, Service: a.Service},
		keyHex:       g.Credential,
		sessionToken: a.SessionToken,
		now:          time.Now,
	}, nil
}

func (s *SigV4) isS3() bool { return strings.HasPrefix(s.signer.Service, "s3") }

// Apply signs out. The presigned URL's own signature parameters go; what
// is signed is the request as it leaves, with the payload hash the SDK
// declared (X-Amz-Content-Sha256), or the body's own hash.
func (s *SigV4) Apply(out *http.Request) error {
	presigned := strings.Contains(out.URL.RawQuery, "X-Amz-")
	out.URL.RawQuery = reqpath.DropQueryParams(out.URL.RawQuery, func(k, _ string) bool { return sigv4.IsPresignParam(k) })
	payload, err := s.payloadHash(out, presigned)
	if err != nil {
		return err
	}
	amzDate := sigv4.SigningTime(s.now(), s.signer.Date)
	seed, err := s.signer.SignRequest(out, amzDate, payload, s.sessionToken, !s.isS3())
	if err != nil {
		return &RequestError{err}
	}
	switch payload {
	case sigv4.StreamingSigned, sigv4.StreamingSignedTrailer:
		out.Body = s.signer.ResignChunks(out.Body, amzDate, seed, payload == sigv4.StreamingSignedTrailer)
	}
	return nil
}

// payloadHash is what the signature says of the body.
func (s *SigV4) payloadHash(out *http.Request, presigned bool) (string, error) {
	declared := out.Header.Get("X-Amz-Content-Sha256")
	switch declared {
	case sigv4.UnsignedPayload, sigv4.StreamingUnsignedTrailer, sigv4.StreamingSigned, sigv4.StreamingSignedTrailer:
		return declared, nil
	case "":
	default:
		if len(declared) != 64 || strings.Trim(declared, "0123456789abcdef") != "" {
			return "", &RequestError{errors.New("X-Amz-Content-Sha256 is neither a SHA-256 in hex nor a payload form AWS defines")}
		}
		return declared, nil // S3 checks the body against it
	}
	empty := out.Body == nil || out.Body == http.NoBody || out.ContentLength == 0
	if s.isS3() {
		// S3 wants the header with header signatures; UNSIGNED-PAYLOAD is
		// what a presigned URL's body always was.
		payload := sigv4.UnsignedPayload
		if empty && !presigned {
			payload = sigv4.EmptySHA256
		}
		out.Header.Set("X-Amz-Content-Sha256", payload)
		return payload, nil
	}
	if empty {
		return sigv4.EmptySHA256, nil
	}
	body, err := io.ReadAll(io.LimitReader(out.Body, MaxHashedBody+1))
	out.Body.Close()
	if err != nil {
		return "", err
	}
	if len(body) > MaxHashedBody {
		return "", &RequestError{fmt.Errorf("a body over %d MiB must come with its X-Amz-Content-Sha256 to be signed", MaxHashedBody>>20)}
	}
	out.Body = io.NopCloser(bytes.NewReader(body))
	out.ContentLength = int64(len(body))
	return sigv4.HexSHA256(body), nil
}

// Wires are the signing key (the grant's credential), the access key id
// and the session token: every form of AWS's credentials the proxy holds.
func (s *SigV4) Wires() []scrub.Wire {
	// AWS key ids are upper case: lower-cased, one still reads whole.
	wires := []scrub.Wire{{Value: s.signer.AccessKeyID}, {Value: strings.ToLower(s.signer.AccessKeyID)}}
	if s.sessionToken != "" {
		wires = append(wires, scrub.Wire{Value: s.sessionToken})
	}
	return wires
}
