// Package sigv4 is AWS Signature Version 4 as Phantom needs it: the engine
// derives a signing key for one day, region and service from the secret
// access key (which never leaves it), and the proxy signs requests, and the
// chunks of a signed streaming upload, with that key alone.
//
// The algorithm is AWS's published one
// (https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html);
// the tests hold it to the AWS SDK's own signer.
package sigv4

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"time"
)

const (
	// Algorithm names SigV4 in the Authorization header.
	Algorithm = "AWS4-HMAC-SHA256"
	// TimeFormat is X-Amz-Date's, DateFormat the credential scope's day.
	TimeFormat = "20060102T150405Z"
	DateFormat = "20060102"
	// EmptySHA256 is the hex SHA-256 of no bytes.
	EmptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
)

// Payload hashes with a meaning of their own (X-Amz-Content-Sha256).
const (
	UnsignedPayload          = "UNSIGNED-PAYLOAD"
	StreamingSigned          = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
	StreamingSignedTrailer   = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
	StreamingUnsignedTrailer = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
)

// SigningKey derives the key that signs every request of one day (UTC,
// DateFormat), region and service: what the engine hands the proxy instead
// of the secret access key.
func SigningKey(secretAccessKey, date, region, service string) []byte {
	k := mac([]byte("AWS4"+secretAccessKey), date)
	k = mac(k, region)
	k = mac(k, service)
	return mac(k, "aws4_request")
}

// Scope is the credential scope of a day, region and service.
func Scope(date, region, service string) string {
	return date + "/" + region + "/" + service + "/aws4_request"
}

// Signer signs with one day's key.
type Signer struct {
	Key                   []byte
	AccessKeyID           string
	Date, Region, Service string
}

// Scope is the signer's credential scope.
func (s *Signer) Scope() string { return Scope(s.Date, s.Region, s.Service) }

// Sign returns the signature of a canonical request made at amzDate
// (TimeFormat, on the signer's day).
func (s *Signer) Sign(amzDate, canonicalRequest string) string {
	sum := sha256.Sum256([]byte(canonicalRequest))
	return s.sign(Algorithm + "\n" + amzDate + "\n" + s.Scope() + "\n" + hex.EncodeToString(sum[:]))
}

// Authorization is the header value for a signature over signedHeaders.
func (s *Signer) Authorization(signedHeaders, signature string) string {
	return Algorithm + " Credential=" + s.AccessKeyID + "/" + s.Scope() +
		", SignedHeaders=" + signedHeaders + ", Signature=" + signature
}

// ChunkSignature signs one chunk of a STREAMING-AWS4-HMAC-SHA256-PAYLOAD
// body, chained to the signature before it (the request's for the first).
func (s *Signer) ChunkSignature(amzDate, previous string, chunk []byte) string {
	sum := sha256.Sum256(chunk)
	return s.sign("AWS4-HMAC-SHA256-PAYLOAD\n" + amzDate + "\n" + s.Scope() + "\n" +
		previous + "\n" + EmptySHA256 + "\n" + hex.EncodeToString(sum[:]))
}

// TrailerSignature signs the trailing headers of a
// STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER body ("name:value\n" each),
// chained to the last chunk's signature.
func (s *Signer) TrailerSignature(amzDate, previous, trailers string) string {
	sum := sha256.Sum256([]byte(trailers))
	return s.sign("AWS4-HMAC-SHA256-TRAILER\n" + amzDate + "\n" + s.Scope() + "\n" +
		previous + "\n" + hex.EncodeToString(sum[:]))
}

func (s *Signer) sign(stringToSign string) string {
	return hex.EncodeToString(mac(s.Key, stringToSign))
}

// SigningTime is the X-Amz-Date to sign with at now, with a key for day:
// now, unless the key's day is not now's (the engine's clock and the
// proxy's straddle midnight), when it is the nearest second of that day,
// which AWS accepts within its 15 minutes of clock skew.
func SigningTime(now time.Time, day string) string {
	now = now.UTC()
	switch d := now.Format(DateFormat); {
	case d < day:
		return day + "T000000Z"
	case d > day:
		return day + "T235959Z"
	}
	return now.Format(TimeFormat)
}

func mac(key []byte, data string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(data))
	return h.Sum(nil)
}

// HexSHA256 is the hex SHA-256 of b.
func HexSHA256(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// trimAll collapses runs of spaces in a header value and trims it, as the
// canonical form wants.
func trimAll(v string) string {
	return strings.Join(strings.Fields(v), " ")
}
