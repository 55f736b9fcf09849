package sdk

// A stand-in AWS upstream (S3 and Bedrock runtime) that accepts only
// requests SigV4-signed with the real secret access key, checked with the
// AWS SDK's own signer: the request is rebuilt with exactly the headers the
// received Authorization header (or presigned URL) names, signed again with
// the real credentials, and the signatures are compared in constant time.
// aws-chunked bodies are checked chunk by chunk (chunk signatures through
// v4.StreamSigner, trailing checksums by decoding). Anything else is a 403
// with an AWS-style error, and every request that arrives is logged with
// the verdict.
//
// v4.StreamSigner.GetSignature(ctx, nil, chunk, t) is exactly the
// aws-chunked chunk signature: its string to sign (aws/signer/v4/stream.go,
// buildEventStreamStringToSign) is "AWS4-HMAC-SHA256-PAYLOAD\n" + the
// signing time + "\n" + the scope + "\n" + hex(previous signature) + "\n" +
// hex(sha256(headers)) + "\n" + hex(sha256(chunk)), HMACed with the key
// derived for (day, region, service); with nil headers the fourth line is
// sha256 of the empty string, as the S3 chunked-upload spec says, and the
// first previous signature is the seed (the request's own signature).

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"hash/crc64"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// Payload forms a verified request may carry (its X-Amz-Content-Sha256, or
// the hash computed from the body when a service does not send one).
const (
	payloadUnsigned         = "UNSIGNED-PAYLOAD"
	payloadStreamSigned     = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
	payloadStreamSignedTrlr = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
	payloadStreamUnsignTrlr = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
	emptySHA256             = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	sigv4Algorithm          = "AWS4-HMAC-SHA256"
	amzTimeFormat           = "20060102T150405Z"
)

// sigV4Verifier checks requests for one service in one region against the
// real credentials.
type sigV4Verifier struct {
	Creds   aws.Credentials // the real ones: access key id, secret, optional session token
	Region  string
	Service string           // "s3" or "bedrock"
	Now     func() time.Time // nil: time.Now
}

// awsError is a refusal: an AWS error code and message.
type awsError struct {
	Status  int
	Code    string
	Message string
}

func (e *awsError) Error() string { return e.Code + ": " + e.Message }

func deny(code, format string, args ...any) *awsError {
	return &awsError{Status: http.StatusForbidden, Code: code, Message: fmt.Sprintf(format, args...)}
}

func badRequest(code, format string, args ...any) *awsError {
	return &awsError{Status: http.StatusBadRequest, Code: code, Message: fmt.Sprintf(format, args...)}
}

// verified is what a request that passed carried.
type verified struct {
	Presigned     bool
	PayloadForm   string // the X-Amz-Content-Sha256 form: a hex hash, UNSIGNED-PAYLOAD, STREAMING-...
	SignedHeaders []string
	Body          []byte // the payload, aws-chunked decoded
	Chunks        int    // aws-chunked data chunks (the final empty one not counted)
	ChunkSigs     int    // chunk signatures checked, the final one included
	Trailers      map[string]string
	Checksum      string // "crc32:<base64>" when a checksum (header or trailer) was checked
}

func (v *sigV4Verifier) now() time.Time {
	if v.Now != nil {
		return v.Now()
	}
	return time.Now()
}

// signerOpts: S3 does not double-escape the path in its canonical request;
// every other service does.
func (v *sigV4Verifier) signerOpts(o *v4.SignerOptions) {
	o.DisableURIPathEscaping = v.Service == "s3"
	o.DisableHeaderHoisting = true // the rebuilt request holds exactly what was signed
}

// Verify checks r, reading its whole body.
func (v *sigV4Verifier) Verify(r *http.Request) (*verified, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, badRequest("IncompleteBody", "reading the body: %v", err)
	}
	if r.URL.Query().Has("X-Amz-Signature") || r.URL.Query().Has("X-Amz-Credential") {
		return v.verifyPresigned(r, body)
	}
	return v.verifyHeader(r, body)
}

// authHeader is a parsed "AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...".
type authHeader struct {
	credential, signedHeaders, signature string
}

func parseAuthorization(h string) (authHeader, error) {
	var a authHeader
	rest, ok := strings.CutPrefix(h, sigv4Algorithm+" ")
	if !ok {
		return a, badRequest("AuthorizationHeaderMalformed", "not %s", sigv4Algorithm)
	}
	for _, part := range strings.Split(rest, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return a, badRequest("AuthorizationHeaderMalformed", "component %q", part)
		}
		switch k {
		case "Credential":
			a.credential = val
		case "SignedHeaders":
			a.signedHeaders = val
		case "Signature":
			a.signature = val
		default:
			return a, badRequest("AuthorizationHeaderMalformed", "unknown component %q", k)
		}
	}
	if a.credential == "" || a.signedHeaders == "" || a.signature == "" {
		return a, badRequest("AuthorizationHeaderMalformed", "missing a component")
	}
	return a, nil
}

// checkScope checks "AKID/yyyymmdd/region/service/aws4_request" against the
// real access key id, the signing time's day, the region and the service.
func (v *sigV4Verifier) checkScope(credential string, t time.Time) error {
	parts := strings.Split(credential, "/")
	if len(parts) != 5 || parts[4] != "aws4_request" {
		return badRequest("AuthorizationHeaderMalformed", "credential %q is not AKID/date/region/service/aws4_request", credential)
	}
	if !hmac.Equal([]byte(parts[0]), []byte(v.Creds.AccessKeyID)) {
		return deny("InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records.")
	}
	if parts[1] != t.UTC().Format("20060102") {
		return badRequest("AuthorizationHeaderMalformed", "credential date %s is not the signing day", parts[1])
	}
	if parts[2] != v.Region {
		return badRequest("AuthorizationHeaderMalformed", "the region %q is wrong; expecting %q", parts[2], v.Region)
	}
	if parts[3] != v.Service {
		return badRequest("AuthorizationHeaderMalformed", "the service %q is wrong; expecting %q", parts[3], v.Service)
	}
	return nil
}

func (v *sigV4Verifier) checkSessionToken(got string) error {
	if !hmac.Equal([]byte(got), []byte(v.Creds.SessionToken)) {
		return deny("InvalidToken", "The provided token is malformed or otherwise invalid.")
	}
	return nil
}

// rebuild makes the request the signer is given: method, host, path and
// query as received, and only the signed headers (the signer adds host,
// content-length when positive, x-amz-date and x-amz-security-token on
// its own). A signed header the Go signer never signs cannot be checked
// with it, so it is refused.
func rebuild(r *http.Request, signed []string) (*http.Request, error) {
	u := &url.URL{Scheme: "http", Host: r.Host, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
	req, err := http.NewRequest(r.Method, u.String(), nil)
	if err != nil {
		return nil, badRequest("InvalidRequest", "%v", err)
	}
	req.URL = u
	req.Host = r.Host
	req.ContentLength = 0
	for i, name := range signed {
		if name != strings.ToLower(name) || (i > 0 && signed[i-1] >= name) {
			return nil, badRequest("AuthorizationHeaderMalformed", "SignedHeaders not sorted lower case: %v", signed)
		}
		switch name {
		case "host":
			continue
		case "content-length":
			if r.ContentLength <= 0 {
				return nil, deny("SignatureDoesNotMatch", "content-length is signed but the request has none")
			}
			req.ContentLength = r.ContentLength
			continue
		case "authorization", "user-agent", "x-amzn-trace-id", "expect", "transfer-encoding":
			return nil, deny("SignatureDoesNotMatch", "signed header %q is one aws-sdk-go-v2's signer never signs: this stand-in cannot check it", name)
		}
		vals, ok := r.Header[textproto.CanonicalMIMEHeaderKey(name)]
		if !ok {
			return nil, deny("SignatureDoesNotMatch", "signed header %q is missing", name)
		}
		req.Header[textproto.CanonicalMIMEHeaderKey(name)] = append([]string(nil), vals...)
	}
	if !contains(signed, "host") {
		return nil, deny("SignatureDoesNotMatch", "host is not signed")
	}
	return req, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func (v *sigV4Verifier) signingTime(amzDate string) (time.Time, error) {
	t, err := time.Parse(amzTimeFormat, amzDate)
	if err != nil {
		return t, deny("AccessDenied", "X-Amz-Date %q is not %s", amzDate, amzTimeFormat)
	}
	return t, nil
}

func (v *sigV4Verifier) verifyHeader(r *http.Request, body []byte) (*verified, error) {
	auth := r.Header.Get("Authorization")
	if auth == "" {
		return nil, deny("AccessDenied", "Anonymous access is forbidden for this operation")
	}
	a, err := parseAuthorization(auth)
	if err != nil {
		return nil, err
	}
	t, err := v.signingTime(r.Header.Get("X-Amz-Date"))
	if err != nil {
		return nil, err
	}
	if d := v.now().Sub(t); d > 15*time.Minute || d < -15*time.Minute {
		return nil, deny("RequestTimeTooSkewed", "The difference between the request time and the current time is too large.")
	}
	if err := v.checkScope(a.credential, t); err != nil {
		return nil, err
	}
	if err := v.checkSessionToken(r.Header.Get("X-Amz-Security-Token")); err != nil {
		return nil, err
	}
	signed := strings.Split(a.signedHeaders, ";")
	if !contains(signed, "x-amz-date") {
		return nil, deny("SignatureDoesNotMatch", "x-amz-date is not signed")
	}
	if v.Creds.SessionToken != "" && !contains(signed, "x-amz-security-token") {
		return nil, deny("SignatureDoesNotMatch", "x-amz-security-token is not signed")
	}

	// The payload hash: what X-Amz-Content-Sha256 says (S3 requires it), or
	// the body's own hash (other services may leave the header out).
	form := r.Header.Get("X-Amz-Content-Sha256")
	bodyHash := sha256.Sum256(body)
	switch {
	case form == "" && v.Service == "s3":
		return nil, badRequest("InvalidRequest", "Missing required header for this request: x-amz-content-sha256")
	case form == "":
		form = hex.EncodeToString(bodyHash[:])
	case form == payloadUnsigned, strings.HasPrefix(form, "STREAMING-"):
	default:
		if !hmac.Equal([]byte(form), []byte(hex.EncodeToString(bodyHash[:]))) {
			return nil, badRequest("XAmzContentSHA256Mismatch", "The provided 'x-amz-content-sha256' header does not match what was computed.")
		}
	}

	req, err := rebuild(r, signed)
	if err != nil {
		return nil, err
	}
	creds := v.Creds
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, form, v.Service, v.Region, t, v.signerOpts); err != nil {
		return nil, deny("SignatureDoesNotMatch", "signing: %v", err)
	}
	want, err := parseAuthorization(req.Header.Get("Authorization"))
	if err != nil {
		return nil, err
	}
	if want.signedHeaders != a.signedHeaders {
		return nil, deny("SignatureDoesNotMatch", "signed headers %q, the signer signed %q", a.signedHeaders, want.signedHeaders)
	}
	if !hmac.Equal([]byte(want.signature), []byte(a.signature)) || want.credential != a.credential {
		return nil, deny("SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided. Check your key and signing method.")
	}

	out := &verified{PayloadForm: form, SignedHeaders: signed, Body: body}
	if strings.HasPrefix(form, "STREAMING-") {
		seed, err := hex.DecodeString(a.signature)
		if err != nil {
			return nil, deny("SignatureDoesNotMatch", "signature is not hex")
		}
		if err := v.decodeChunked(r, body, form, seed, t, out); err != nil {
			return nil, err
		}
	} else if err := checkHeaderChecksum(r.Header, body, out); err != nil {
		return nil, err
	}
	return out, nil
}

func (v *sigV4Verifier) verifyPresigned(r *http.Request, body []byte) (*verified, error) {
	q := r.URL.Query()
	if q.Get("X-Amz-Algorithm") != sigv4Algorithm {
		return nil, badRequest("AuthorizationQueryParametersError", "X-Amz-Algorithm must be %s", sigv4Algorithm)
	}
	if r.Header.Get("Authorization") != "" {
		return nil, badRequest("InvalidArgument", "Only one auth mechanism allowed")
	}
	t, err := v.signingTime(q.Get("X-Amz-Date"))
	if err != nil {
		return nil, err
	}
	expires, err := strconv.Atoi(q.Get("X-Amz-Expires"))
	if err != nil || expires < 1 || expires > 604800 {
		return nil, badRequest("AuthorizationQueryParametersError", "X-Amz-Expires %q", q.Get("X-Amz-Expires"))
	}
	now := v.now()
	if now.After(t.Add(time.Duration(expires) * time.Second)) {
		return nil, deny("AccessDenied", "Request has expired")
	}
	if t.After(now.Add(15 * time.Minute)) {
		return nil, deny("AccessDenied", "Request is not valid yet")
	}
	if err := v.checkScope(q.Get("X-Amz-Credential"), t); err != nil {
		return nil, err
	}
	if err := v.checkSessionToken(q.Get("X-Amz-Security-Token")); err != nil {
		return nil, err
	}
	got := q.Get("X-Amz-Signature")
	signedStr := q.Get("X-Amz-SignedHeaders")
	signed := strings.Split(signedStr, ";")
	q.Del("X-Amz-Signature")
	req, err := rebuild(r, signed)
	if err != nil {
		return nil, err
	}
	req.URL.RawQuery = q.Encode()
	form := q.Get("X-Amz-Content-Sha256")
	if form == "" {
		form = r.Header.Get("X-Amz-Content-Sha256")
	}
	if form == "" {
		form = payloadUnsigned
	}
	signedURL, _, err := v4.NewSigner().PresignHTTP(context.Background(), v.Creds, req, form, v.Service, v.Region, t, v.signerOpts)
	if err != nil {
		return nil, deny("SignatureDoesNotMatch", "presigning: %v", err)
	}
	su, err := url.Parse(signedURL)
	if err != nil {
		return nil, deny("SignatureDoesNotMatch", "%v", err)
	}
	if su.Query().Get("X-Amz-SignedHeaders") != signedStr {
		return nil, deny("SignatureDoesNotMatch", "signed headers %q, the signer signed %q", signedStr, su.Query().Get("X-Amz-SignedHeaders"))
	}
	if !hmac.Equal([]byte(su.Query().Get("X-Amz-Signature")), []byte(got)) {
		return nil, deny("SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided. Check your key and signing method.")
	}
	if len(body) > 0 && form != payloadUnsigned {
		return nil, badRequest("InvalidRequest", "a presigned request with a body must be UNSIGNED-PAYLOAD")
	}
	return &verified{Presigned: true, PayloadForm: form, SignedHeaders: signed, Body: body}, nil
}

// checksumOf computes an x-amz-checksum-<alg> value.
func checksumOf(alg string, data []byte) (string, bool) {
	var h hash.Hash
	switch strings.ToLower(alg) {
	case "crc32":
		h = crc32.NewIEEE()
	case "crc32c":
		h = crc32.New(crc32.MakeTable(crc32.Castagnoli))
	case "crc64nvme":
		h = crc64.New(crc64.MakeTable(0x9a6c9329ac4bc9b5))
	case "sha1":
		h = sha1.New()
	case "sha256":
		h = sha256.New()
	default:
		return "", false
	}
	h.Write(data)
	return base64.StdEncoding.EncodeToString(h.Sum(nil)), true
}

// checkHeaderChecksum checks an x-amz-checksum-* header against the body.
func checkHeaderChecksum(h http.Header, body []byte, out *verified) error {
	for name, vals := range h {
		alg, ok := strings.CutPrefix(strings.ToLower(name), "x-amz-checksum-")
		if !ok || alg == "mode" || alg == "type" {
			continue
		}
		want, ok := checksumOf(alg, body)
		if !ok {
			return badRequest("InvalidRequest", "unknown checksum algorithm %q", alg)
		}
		if len(vals) != 1 || vals[0] != want {
			return badRequest("BadDigest", "The %s you specified did not match the calculated checksum.", strings.ToUpper(alg))
		}
		out.Checksum = alg + ":" + want
	}
	return nil
}

// decodeChunked decodes an aws-chunked body, checking each chunk's
// signature (signed forms), the trailing checksum (trailer forms), the
// trailer's signature (the signed trailer form) and
// X-Amz-Decoded-Content-Length.
func (v *sigV4Verifier) decodeChunked(r *http.Request, raw []byte, form string, seed []byte, t time.Time, out *verified) error {
	signedChunks := form == payloadStreamSigned || form == payloadStreamSignedTrlr
	withTrailer := form == payloadStreamSignedTrlr || form == payloadStreamUnsignTrlr
	if form != payloadStreamSigned && !withTrailer {
		return badRequest("InvalidArgument", "x-amz-content-sha256 %q is not a payload form", form)
	}
	if !strings.Contains(r.Header.Get("Content-Encoding"), "aws-chunked") {
		return badRequest("InvalidArgument", "%s without Content-Encoding: aws-chunked", form)
	}
	ss := v4.NewStreamSigner(v.Creds, v.Service, v.Region, seed)
	prev := seed
	br := bufio.NewReader(bytes.NewReader(raw))
	var data bytes.Buffer
	for {
		line, err := readCRLF(br)
		if err != nil {
			return badRequest("IncompleteBody", "chunk header: %v", err)
		}
		sizeHex, ext, _ := strings.Cut(line, ";")
		size, err := strconv.ParseInt(sizeHex, 16, 64)
		if err != nil || size < 0 {
			return badRequest("InvalidChunkSizeError", "chunk size %q", sizeHex)
		}
		chunk := make([]byte, size)
		if _, err := io.ReadFull(br, chunk); err != nil {
			return badRequest("IncompleteBody", "chunk data: %v", err)
		}
		if signedChunks {
			sig, ok := strings.CutPrefix(ext, "chunk-signature=")
			if !ok {
				return deny("SignatureDoesNotMatch", "chunk %d has no chunk-signature", out.ChunkSigs)
			}
			want, _ := ss.GetSignature(context.Background(), nil, chunk, t)
			if !hmac.Equal([]byte(hex.EncodeToString(want)), []byte(sig)) {
				return deny("SignatureDoesNotMatch", "chunk %d: the chunk signature does not match", out.ChunkSigs)
			}
			prev = want
			out.ChunkSigs++
		} else if ext != "" {
			return badRequest("InvalidArgument", "an unsigned chunk carries %q", ext)
		}
		if size == 0 {
			break
		}
		data.Write(chunk)
		out.Chunks++
		if crlf, err := readCRLF(br); err != nil || crlf != "" {
			return badRequest("IncompleteBody", "chunk %d not followed by CRLF", out.Chunks)
		}
	}
	out.Body = data.Bytes()
	out.Trailers = map[string]string{}
	var trailerText strings.Builder
	trailerSig := ""
	for {
		line, err := readCRLF(br)
		if err != nil {
			return badRequest("IncompleteBody", "trailer: %v", err)
		}
		if line == "" {
			break
		}
		name, val, ok := strings.Cut(line, ":")
		if !ok {
			return badRequest("MalformedTrailerError", "trailer line %q", line)
		}
		name = strings.ToLower(strings.TrimSpace(name))
		if name == "x-amz-trailer-signature" {
			trailerSig = strings.TrimSpace(val)
			continue
		}
		out.Trailers[name] = strings.TrimSpace(val)
		trailerText.WriteString(name + ":" + strings.TrimSpace(val) + "\n")
	}
	if rest, _ := io.ReadAll(br); len(rest) > 0 {
		return badRequest("IncompleteBody", "%d bytes after the aws-chunked body", len(rest))
	}
	if dl := r.Header.Get("X-Amz-Decoded-Content-Length"); dl != "" && dl != strconv.Itoa(len(out.Body)) {
		return badRequest("IncompleteBody", "X-Amz-Decoded-Content-Length %s, decoded %d bytes", dl, len(out.Body))
	}
	if !withTrailer {
		if len(out.Trailers) > 0 || trailerSig != "" {
			return badRequest("MalformedTrailerError", "trailers in %s", form)
		}
		return checkHeaderChecksum(r.Header, out.Body, out)
	}
	declared := strings.ToLower(strings.TrimSpace(r.Header.Get("X-Amz-Trailer")))
	if declared == "" || len(out.Trailers) != 1 || out.Trailers[declared] == "" {
		return badRequest("MalformedTrailerError", "X-Amz-Trailer %q, trailers %v", declared, out.Trailers)
	}
	alg, ok := strings.CutPrefix(declared, "x-amz-checksum-")
	want, known := checksumOf(alg, out.Body)
	if !ok || !known {
		return badRequest("InvalidRequest", "trailer %q is not a checksum", declared)
	}
	if out.Trailers[declared] != want {
		return badRequest("BadDigest", "The %s you specified did not match the calculated checksum.", strings.ToUpper(alg))
	}
	out.Checksum = alg + ":" + want
	if form == payloadStreamSignedTrlr {
		// The trailer's signature (S3's chunked upload with trailer): not a
		// string the StreamSigner builds, so HMACed here with the same key.
		scope := strings.Join([]string{t.UTC().Format("20060102"), v.Region, v.Service, "aws4_request"}, "/")
		sum := sha256.Sum256([]byte(trailerText.String()))
		sts := strings.Join([]string{"AWS4-HMAC-SHA256-TRAILER", t.UTC().Format(amzTimeFormat), scope, hex.EncodeToString(prev), hex.EncodeToString(sum[:])}, "\n")
		wantSig := hex.EncodeToString(hmacSHA256(signingKey(v.Creds.SecretAccessKey, t, v.Region, v.Service), []byte(sts)))
		if !hmac.Equal([]byte(wantSig), []byte(trailerSig)) {
			return deny("SignatureDoesNotMatch", "the trailer signature does not match")
		}
	} else if trailerSig != "" {
		return badRequest("MalformedTrailerError", "a trailer signature in %s", form)
	}
	return nil
}

func readCRLF(br *bufio.Reader) (string, error) {
	line, err := br.ReadString('\n')
	if err != nil {
		return "", err
	}
	if !strings.HasSuffix(line, "\r\n") {
		return "", errors.New("line not ended by CRLF")
	}
	return strings.TrimSuffix(line, "\r\n"), nil
}

func hmacSHA256(key, data []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(data)
	return m.Sum(nil)
}

// signingKey is SigV4's key for (day, region, service): what the engine
// hands the proxy instead of the secret.
func signingKey(secret string, t time.Time, region, service string) []byte {
	k := hmacSHA256([]byte("AWS4"+secret), []byte(t.UTC().Format("20060102")))
	k = hmacSHA256(k, []byte(region))
	k = hmacSHA256(k, []byte(service))
	return hmacSHA256(k, []byte("aws4_request"))
}

// encodeSignedChunks is an aws-chunked body for STREAMING-AWS4-HMAC-SHA256-PAYLOAD,
// chunks of chunkSize signed from seed (the request's signature) as a
// client does, with the final empty chunk.
func encodeSignedChunks(creds aws.Credentials, service, region string, seed []byte, t time.Time, data []byte, chunkSize int) []byte {
	ss := v4.NewStreamSigner(creds, service, region, seed)
	var b bytes.Buffer
	for {
		n := min(chunkSize, len(data))
		chunk := data[:n]
		data = data[n:]
		sig, _ := ss.GetSignature(context.Background(), nil, chunk, t)
		fmt.Fprintf(&b, "%x;chunk-signature=%x\r\n", n, sig)
		b.Write(chunk)
		b.WriteString("\r\n")
		if n == 0 {
			return b.Bytes()
		}
	}
}

// encodedChunkedLength is the length of encodeSignedChunks' output.
func encodedChunkedLength(dataLen, chunkSize int) int {
	line := func(n int) int { return len(fmt.Sprintf("%x", n)) + len(";chunk-signature=") + 64 + 2 + n + 2 }
	total := 0
	for dataLen > 0 {
		n := min(chunkSize, dataLen)
		total += line(n)
		dataLen -= n
	}
	return total + line(0)
}

// ----- the stand-in service -----

// awsArrival is one request the stand-in received, and its verdict.
type awsArrival struct {
	Method, Path, RawQuery string
	Header                 http.Header
	Verified               *verified // nil when refused
	Refusal                string    // the error code when refused
}

type s3Object struct {
	data        []byte
	contentType string
	checksum    string // "alg:base64", when the upload carried one
	modified    time.Time
}

// awsUpstream is the stand-in: S3 (path-style PutObject, GetObject,
// HeadObject, ListObjectsV2) and Bedrock runtime (/model/{id}/converse and
// /model/{id}/invoke), each behind its verifier.
type awsUpstream struct {
	S3, Bedrock *sigV4Verifier

	mu       sync.Mutex
	arrivals []awsArrival
	objects  map[string]s3Object // "bucket/key"
}

func newAWSUpstream(creds aws.Credentials, region string) *awsUpstream {
	return &awsUpstream{
		S3:      &sigV4Verifier{Creds: creds, Region: region, Service: "s3"},
		Bedrock: &sigV4Verifier{Creds: creds, Region: region, Service: "bedrock"},
		objects: map[string]s3Object{},
	}
}

// Arrivals is every request received so far, in order.
func (u *awsUpstream) Arrivals() []awsArrival {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]awsArrival(nil), u.arrivals...)
}

// Refused is the arrivals the verifier refused.
func (u *awsUpstream) Refused() []awsArrival {
	var out []awsArrival
	for _, a := range u.Arrivals() {
		if a.Verified == nil {
			out = append(out, a)
		}
	}
	return out
}

func (u *awsUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	bedrock := strings.HasPrefix(r.URL.Path, "/model/")
	ver := u.S3
	if bedrock {
		ver = u.Bedrock
	}
	got, err := ver.Verify(r)
	arr := awsArrival{Method: r.Method, Path: r.URL.EscapedPath(), RawQuery: r.URL.RawQuery, Header: r.Header.Clone(), Verified: got}
	var ae *awsError
	if err != nil {
		if !errors.As(err, &ae) {
			ae = deny("AccessDenied", "%v", err)
		}
		arr.Refusal = ae.Code
	}
	u.mu.Lock()
	u.arrivals = append(u.arrivals, arr)
	u.mu.Unlock()
	if ae != nil {
		if bedrock {
			writeJSONError(w, ae)
		} else {
			writeXMLError(w, r, ae)
		}
		return
	}
	if bedrock {
		u.serveBedrock(w, r, got)
		return
	}
	u.serveS3(w, r, got)
}

func writeXMLError(w http.ResponseWriter, r *http.Request, e *awsError) {
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(e.Status)
	if r.Method == http.MethodHead {
		return
	}
	type errDoc struct {
		XMLName   xml.Name `xml:"Error"`
		Code      string
		Message   string
		Resource  string
		RequestId string
	}
	fmt.Fprint(w, xml.Header)
	xml.NewEncoder(w).Encode(errDoc{Code: e.Code, Message: e.Message, Resource: r.URL.EscapedPath(), RequestId: "STANDIN0REQUEST0ID"})
}

func writeJSONError(w http.ResponseWriter, e *awsError) {
	w.Header().Set("Content-Type", "application/json")
	code := "AccessDeniedException"
	if e.Status == http.StatusBadRequest {
		code = "ValidationException"
	}
	w.Header().Set("X-Amzn-Errortype", code)
	w.WriteHeader(e.Status)
	fmt.Fprintf(w, `{"message":%q}`, e.Code+": "+e.Message)
}

func (u *awsUpstream) serveS3(w http.ResponseWriter, r *http.Request, got *verified) {
	bucket, key, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	if bucket == "" {
		writeXMLError(w, r, &awsError{Status: 400, Code: "InvalidRequest", Message: "path-style addressing only: /bucket/key"})
		return
	}
	if key == "" {
		if r.Method == http.MethodGet && r.URL.Query().Get("list-type") == "2" {
			u.listObjectsV2(w, bucket, r.URL.Query().Get("prefix"))
			return
		}
		writeXMLError(w, r, &awsError{Status: 501, Code: "NotImplemented", Message: "only ListObjectsV2 on a bucket"})
		return
	}
	id := bucket + "/" + key
	switch r.Method {
	case http.MethodPut:
		if r.Header.Get("X-Amz-Copy-Source") != "" || r.URL.Query().Has("partNumber") {
			writeXMLError(w, r, &awsError{Status: 501, Code: "NotImplemented", Message: "only PutObject"})
			return
		}
		obj := s3Object{data: got.Body, contentType: r.Header.Get("Content-Type"), checksum: got.Checksum, modified: time.Now().UTC()}
		u.mu.Lock()
		u.objects[id] = obj
		u.mu.Unlock()
		w.Header().Set("ETag", etag(obj.data))
		if alg, val, ok := strings.Cut(obj.checksum, ":"); ok {
			w.Header().Set("X-Amz-Checksum-"+alg, val)
		}
		w.WriteHeader(http.StatusOK)
	case http.MethodGet, http.MethodHead:
		u.mu.Lock()
		obj, ok := u.objects[id]
		u.mu.Unlock()
		if !ok {
			writeXMLError(w, r, &awsError{Status: 404, Code: "NoSuchKey", Message: "The specified key does not exist."})
			return
		}
		h := w.Header()
		h.Set("ETag", etag(obj.data))
		h.Set("Content-Length", strconv.Itoa(len(obj.data)))
		h.Set("Last-Modified", obj.modified.Format(http.TimeFormat))
		h.Set("Accept-Ranges", "bytes")
		if obj.contentType != "" {
			h.Set("Content-Type", obj.contentType)
		}
		if alg, val, ok := strings.Cut(obj.checksum, ":"); ok && strings.EqualFold(r.Header.Get("X-Amz-Checksum-Mode"), "ENABLED") {
			h.Set("X-Amz-Checksum-"+alg, val)
			h.Set("X-Amz-Checksum-Type", "FULL_OBJECT")
		}
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			w.Write(obj.data)
		}
	default:
		writeXMLError(w, r, &awsError{Status: 405, Code: "MethodNotAllowed", Message: "The specified method is not allowed against this resource."})
	}
}

func etag(data []byte) string {
	sum := md5.Sum(data)
	return `"` + hex.EncodeToString(sum[:]) + `"`
}

func (u *awsUpstream) listObjectsV2(w http.ResponseWriter, bucket, prefix string) {
	type content struct {
		Key          string
		LastModified string
		ETag         string
		Size         int
		StorageClass string
	}
	type result struct {
		XMLName     xml.Name `xml:"http://s3.amazonaws.com/doc/2006-03-01/ ListBucketResult"`
		Name        string
		Prefix      string
		KeyCount    int
		MaxKeys     int
		IsTruncated bool
		Contents    []content
	}
	res := result{Name: bucket, Prefix: prefix, MaxKeys: 1000}
	u.mu.Lock()
	for id, obj := range u.objects {
		key, ok := strings.CutPrefix(id, bucket+"/")
		if !ok || !strings.HasPrefix(key, prefix) {
			continue
		}
		res.Contents = append(res.Contents, content{Key: key, LastModified: obj.modified.Format("2006-01-02T15:04:05.000Z"),
			ETag: etag(obj.data), Size: len(obj.data), StorageClass: "STANDARD"})
	}
	u.mu.Unlock()
	sort.Slice(res.Contents, func(i, j int) bool { return res.Contents[i].Key < res.Contents[j].Key })
	res.KeyCount = len(res.Contents)
	w.Header().Set("Content-Type", "application/xml")
	fmt.Fprint(w, xml.Header)
	xml.NewEncoder(w).Encode(res)
}

// serveBedrock answers Converse with a fixed message and InvokeModel by
// echoing the request's JSON body inside a response.
func (u *awsUpstream) serveBedrock(w http.ResponseWriter, r *http.Request, got *verified) {
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, "/model/"), "/")
	if r.Method != http.MethodPost || len(parts) != 2 || parts[0] == "" {
		writeJSONError(w, &awsError{Status: 400, Code: "UnknownOperation", Message: r.Method + " " + r.URL.Path})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	switch parts[1] {
	case "converse":
		fmt.Fprintf(w, `{"output":{"message":{"role":"assistant","content":[{"text":"hello from bedrock %s"}]}},"stopReason":"end_turn","usage":{"inputTokens":3,"outputTokens":4,"totalTokens":7},"metrics":{"latencyMs":1}}`, parts[0])
	case "invoke":
		fmt.Fprintf(w, `{"model":%q,"echo":%s}`, parts[0], nonEmptyJSON(got.Body))
	default:
		writeJSONError(w, &awsError{Status: 400, Code: "UnknownOperation", Message: parts[1]})
	}
}

func nonEmptyJSON(b []byte) []byte {
	if len(bytes.TrimSpace(b)) == 0 {
		return []byte("null")
	}
	return b
}
