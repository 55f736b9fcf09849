package sdk

// Tests of the stand-in AWS upstream's verifier on its own, with no Phantom
// in between: what the SDK signs with the real secret passes, and a wrong
// secret, access key id or region, a tampered header, body, chunk or
// trailer, or an expired presigned URL fails.

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/aws-sdk-go-v2/service/bedrockruntime"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
)

var realAWS = aws.Credentials{AccessKeyID: awsAccessKeyID, SecretAccessKey: awsSecretKey}

// onlyReader hides every method but Read: an unseekable stream.
type onlyReader struct{ io.Reader }

func startStandIn(t *testing.T, tlsToo bool) (*awsUpstream, *httptest.Server) {
	t.Helper()
	up := newAWSUpstream(realAWS, awsRegion)
	var srv *httptest.Server
	if tlsToo {
		srv = httptest.NewTLSServer(up)
	} else {
		srv = httptest.NewServer(up)
	}
	t.Cleanup(srv.Close)
	return up, srv
}

func tlsClient(srv *httptest.Server) *http.Client {
	if srv.TLS == nil {
		return &http.Client{}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
}

func TestStandInAcceptsTheSDKWithTheRealKey(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", useTLS), func(t *testing.T) {
			up, srv := startStandIn(t, useTLS)
			ctx := context.Background()
			cfg := agentConfig(t, realAWS.AccessKeyID, realAWS.SecretAccessKey)
			c := newS3Client(cfg, srv.URL, tlsClient(srv))
			data := testPayload(3<<20 + 17)
			var body io.Reader = bytes.NewReader(data) // plain http needs a seekable body
			if useTLS {
				body = onlyReader{bytes.NewReader(data)}
			}
			if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("bkt"), Key: aws.String("dir/a file.bin"), Body: body}); err != nil {
				t.Fatalf("PutObject: %v", err)
			}
			got := getObject(t, c, "bkt", "dir/a file.bin")
			if !bytes.Equal(got, data) {
				t.Fatalf("GetObject: %d bytes, want the %d put", len(got), len(data))
			}
			if _, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("bkt"), Key: aws.String("dir/a file.bin")}); err != nil {
				t.Fatalf("HeadObject: %v", err)
			}
			list, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String("bkt"), Prefix: aws.String("dir/")})
			if err != nil || len(list.Contents) != 1 || aws.ToString(list.Contents[0].Key) != "dir/a file.bin" {
				t.Fatalf("ListObjectsV2: %v %+v", err, list)
			}
			presigned, err := s3.NewPresignClient(c).PresignGetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("bkt"), Key: aws.String("dir/a file.bin")})
			if err != nil {
				t.Fatal(err)
			}
			resp, err := tlsClient(srv).Get(presigned.URL)
			if err != nil {
				t.Fatal(err)
			}
			pbody, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !bytes.Equal(pbody, data) {
				t.Fatalf("presigned GET: %d %.200s", resp.StatusCode, pbody)
			}
			br := newBedrockClient(cfg, srv.URL, tlsClient(srv))
			conv, err := br.Converse(ctx, converseInput())
			if err != nil {
				t.Fatalf("Converse: %v", err)
			}
			if text := converseText(conv); !strings.Contains(text, "hello from bedrock") {
				t.Fatalf("Converse: %q", text)
			}
			inv, err := br.InvokeModel(ctx, &bedrockruntime.InvokeModelInput{ModelId: aws.String(bedrockModel), ContentType: aws.String("application/json"), Body: []byte(`{"prompt":"hi"}`)})
			if err != nil || !strings.Contains(string(inv.Body), `"echo":{"prompt":"hi"}`) {
				t.Fatalf("InvokeModel: %v %s", err, inv.Body)
			}
			// Checksums only when required: a seekable body goes as
			// UNSIGNED-PAYLOAD over TLS, with its sha256 over plain http.
			cfg2 := cfg.Copy()
			cfg2.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
			if _, err := newS3Client(cfg2, srv.URL, tlsClient(srv)).PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("bkt"), Key: aws.String("plain"), Body: bytes.NewReader(data[:1000])}); err != nil {
				t.Fatalf("PutObject, checksums when required: %v", err)
			}
			last := up.Arrivals()[len(up.Arrivals())-1]
			if form := last.Verified.PayloadForm; (useTLS && form != payloadUnsigned) || (!useTLS && form != hexSHA256(data[:1000])) || last.Verified.Checksum != "" {
				t.Fatalf("PutObject, checksums when required: %q %q", form, last.Verified.Checksum)
			}
			forms := map[string]bool{}
			for _, a := range up.Arrivals() {
				if a.Verified == nil {
					t.Fatalf("refused %s %s: %s", a.Method, a.Path, a.Refusal)
				}
				forms[a.Verified.PayloadForm] = true
			}
			wantPut := "hex"
			if useTLS {
				wantPut = payloadStreamUnsignTrlr
			}
			put := up.Arrivals()[0]
			if form := put.Verified.PayloadForm; (wantPut == "hex") != (len(form) == 64) || (wantPut != "hex" && form != wantPut) {
				t.Fatalf("PutObject's payload form %q, want %s", form, wantPut)
			}
			if put.Verified.Checksum == "" {
				t.Fatal("PutObject carried no checksum the stand-in checked")
			}
		})
	}
}

func TestStandInRefusesTheWrongKeyRegionOrKeyID(t *testing.T) {
	up, srv := startStandIn(t, false)
	ctx := context.Background()
	for _, c := range []struct {
		name, akid, secret, region string
		code                       string
	}{
		{"wrong secret", awsAccessKeyID, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYWRONGKEYxx", awsRegion, "SignatureDoesNotMatch"},
		{"phantom token as key id", "phm_notarealtoken", awsSecretKey, awsRegion, "InvalidAccessKeyId"},
		{"wrong region", awsAccessKeyID, awsSecretKey, "eu-west-1", "AuthorizationHeaderMalformed"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := agentConfig(t, c.akid, c.secret)
			cfg.Region = c.region
			cl := newS3Client(cfg, srv.URL, nil)
			_, err := cl.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("b"), Key: aws.String("k"), Body: strings.NewReader("x")})
			var apiErr smithy.APIError
			if !errors.As(err, &apiErr) || apiErr.ErrorCode() != c.code {
				t.Fatalf("PutObject: %v, want %s", err, c.code)
			}
			_, err = newBedrockClient(cfg, srv.URL, nil).Converse(ctx, converseInput())
			if err == nil {
				t.Fatal("Converse passed")
			}
		})
	}
	for _, a := range up.Arrivals() {
		if a.Verified != nil {
			t.Fatalf("verified %s %s", a.Method, a.Path)
		}
	}
}

// signedRequest is a request signed by the SDK's signer as a client does.
func signedRequest(t *testing.T, creds aws.Credentials, service, region, method, target string, body []byte, payloadHash string, hdr http.Header, when time.Time) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, "http://127.0.0.1:9"+target, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if service == "s3" {
		req.Header.Set("X-Amz-Content-Sha256", payloadHash)
	}
	err = v4.NewSigner().SignHTTP(context.Background(), creds, req, payloadHash, service, region, when, func(o *v4.SignerOptions) {
		o.DisableURIPathEscaping = service == "s3"
	})
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// verifyReq verifies req as the server would see it.
func verifyReq(v *sigV4Verifier, req *http.Request) (*verified, error) {
	var body []byte
	if req.Body != nil {
		body, _ = io.ReadAll(req.Body)
	}
	in := httptest.NewRequest(req.Method, req.URL.RequestURI(), bytes.NewReader(body))
	in.Host = req.URL.Host
	in.Header = req.Header.Clone()
	in.ContentLength = req.ContentLength
	return v.Verify(in)
}

func wantCode(t *testing.T, what string, err error, code string) {
	t.Helper()
	var ae *awsError
	if !errors.As(err, &ae) || ae.Code != code {
		t.Fatalf("%s: %v, want %s", what, err, code)
	}
}

func TestVerifierSignedRequests(t *testing.T) {
	now := time.Now().UTC()
	s3v := &sigV4Verifier{Creds: realAWS, Region: awsRegion, Service: "s3"}
	body := []byte("some object bytes")
	hdr := func() http.Header { return http.Header{"Content-Type": {"text/plain"}, "X-Amz-Meta-Owner": {"agent"}} }
	sign := func(creds aws.Credentials, region string, b []byte, hash string) *http.Request {
		return signedRequest(t, creds, "s3", region, "PUT", "/bkt/a%20b/c.txt?x-id=PutObject", b, hash, hdr(), now)
	}
	if _, err := verifyReq(s3v, sign(realAWS, awsRegion, body, hexSHA256(body))); err != nil {
		t.Fatalf("the real key, a signed payload hash: %v", err)
	}
	if _, err := verifyReq(s3v, sign(realAWS, awsRegion, body, payloadUnsigned)); err != nil {
		t.Fatalf("the real key, UNSIGNED-PAYLOAD: %v", err)
	}
	wrong := realAWS
	wrong.SecretAccessKey = "not-the-secret"
	_, err := verifyReq(s3v, sign(wrong, awsRegion, body, hexSHA256(body)))
	wantCode(t, "a wrong secret", err, "SignatureDoesNotMatch")
	_, err = verifyReq(s3v, sign(realAWS, "us-west-2", body, hexSHA256(body)))
	wantCode(t, "the wrong region", err, "AuthorizationHeaderMalformed")
	// The wrong region with a scope rewritten to the right one still fails.
	req := sign(realAWS, "us-west-2", body, hexSHA256(body))
	req.Header.Set("Authorization", strings.Replace(req.Header.Get("Authorization"), "/us-west-2/", "/"+awsRegion+"/", 1))
	_, err = verifyReq(s3v, req)
	wantCode(t, "the wrong region's signature", err, "SignatureDoesNotMatch")

	req = sign(realAWS, awsRegion, body, hexSHA256(body))
	req.Header.Set("X-Amz-Meta-Owner", "mallory")
	_, err = verifyReq(s3v, req)
	wantCode(t, "a tampered signed header", err, "SignatureDoesNotMatch")

	req = sign(realAWS, awsRegion, body, hexSHA256(body))
	req.URL.RawQuery = "x-id=DeleteObject"
	_, err = verifyReq(s3v, req)
	wantCode(t, "a tampered query", err, "SignatureDoesNotMatch")

	req = sign(realAWS, awsRegion, body, hexSHA256(body))
	req.URL.Path, req.URL.RawPath = "/bkt/other", ""
	_, err = verifyReq(s3v, req)
	wantCode(t, "a tampered path", err, "SignatureDoesNotMatch")

	req = sign(realAWS, awsRegion, body, hexSHA256(body))
	req.Body = io.NopCloser(bytes.NewReader([]byte("some object bytez")))
	_, err = verifyReq(s3v, req)
	wantCode(t, "a tampered body", err, "XAmzContentSHA256Mismatch")

	req = sign(realAWS, awsRegion, body, hexSHA256(body))
	req.Header.Set("X-Amz-Content-Sha256", payloadUnsigned)
	_, err = verifyReq(s3v, req)
	wantCode(t, "a payload hash swapped for UNSIGNED-PAYLOAD", err, "SignatureDoesNotMatch")

	req = sign(realAWS, awsRegion, body, hexSHA256(body))
	req.Header.Set("X-Amz-Checksum-Crc32", "AAAAAA==")
	req.Header.Set("Authorization", strings.Replace(req.Header.Get("Authorization"), "host;", "host;x-amz-checksum-crc32;", 1))
	_, err = verifyReq(s3v, req)
	wantCode(t, "a header added to SignedHeaders", err, "SignatureDoesNotMatch")

	old := signedRequest(t, realAWS, "s3", awsRegion, "GET", "/bkt/k", nil, emptySHA256, nil, now.Add(-20*time.Minute))
	_, err = verifyReq(s3v, old)
	wantCode(t, "a request signed 20 minutes ago", err, "RequestTimeTooSkewed")

	// A checksum header is checked against the body.
	h := hdr()
	sum, _ := checksumOf("crc32", body)
	h.Set("X-Amz-Checksum-Crc32", sum)
	if v, err := verifyReq(s3v, signedRequest(t, realAWS, "s3", awsRegion, "PUT", "/bkt/k", body, payloadUnsigned, h, now)); err != nil || v.Checksum == "" {
		t.Fatalf("a right CRC32: %v %+v", err, v)
	}
	h.Set("X-Amz-Checksum-Crc32", "AAAAAA==")
	_, err = verifyReq(s3v, signedRequest(t, realAWS, "s3", awsRegion, "PUT", "/bkt/k", body, payloadUnsigned, h, now))
	wantCode(t, "a wrong CRC32", err, "BadDigest")

	// Bedrock: no X-Amz-Content-Sha256, the body's hash is signed.
	bv := &sigV4Verifier{Creds: realAWS, Region: awsRegion, Service: "bedrock"}
	jb := []byte(`{"messages":[]}`)
	breq := signedRequest(t, realAWS, "bedrock", awsRegion, "POST", "/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse", jb, hexSHA256(jb), http.Header{"Content-Type": {"application/json"}}, now)
	if _, err := verifyReq(bv, breq); err != nil {
		t.Fatalf("bedrock, the real key: %v", err)
	}
	breq = signedRequest(t, realAWS, "bedrock", awsRegion, "POST", "/model/m/converse", jb, hexSHA256(jb), http.Header{"Content-Type": {"application/json"}}, now)
	breq.Body = io.NopCloser(strings.NewReader(`{"messages":[1]}`))
	_, err = verifyReq(bv, breq)
	wantCode(t, "bedrock, a tampered body", err, "SignatureDoesNotMatch")
	breq = signedRequest(t, realAWS, "s3", awsRegion, "POST", "/model/m/converse", jb, hexSHA256(jb), nil, now)
	_, err = verifyReq(bv, breq)
	wantCode(t, "bedrock, signed for s3", err, "AuthorizationHeaderMalformed")

	// A session token must be the one issued with the key.
	withTok := realAWS
	withTok.SessionToken = "FwoGZXIvYXdzEXAMPLEsessiontoken"
	tv := &sigV4Verifier{Creds: withTok, Region: awsRegion, Service: "s3"}
	if _, err := verifyReq(tv, signedRequest(t, withTok, "s3", awsRegion, "GET", "/bkt/k", nil, emptySHA256, nil, now)); err != nil {
		t.Fatalf("with the session token: %v", err)
	}
	_, err = verifyReq(tv, signedRequest(t, realAWS, "s3", awsRegion, "GET", "/bkt/k", nil, emptySHA256, nil, now))
	wantCode(t, "without the session token", err, "InvalidToken")
	other := withTok
	other.SessionToken = "another"
	_, err = verifyReq(tv, signedRequest(t, other, "s3", awsRegion, "GET", "/bkt/k", nil, emptySHA256, nil, now))
	wantCode(t, "another session token", err, "InvalidToken")
}

// chunkSignedRequest is a STREAMING-AWS4-HMAC-SHA256-PAYLOAD upload: the
// headers signed first, then each chunk from the seed signature.
func chunkSignedRequest(t *testing.T, creds aws.Credentials, region string, data []byte, chunkSize int, when time.Time) (*http.Request, []byte) {
	t.Helper()
	hdr := http.Header{
		"Content-Encoding":             {"aws-chunked"},
		"X-Amz-Decoded-Content-Length": {strconv.Itoa(len(data))},
		"Content-Type":                 {"application/octet-stream"},
	}
	req := signedRequestLen(t, creds, region, "/bkt/chunked", int64(encodedChunkedLength(len(data), chunkSize)), hdr, when)
	seed := seedSignature(t, req)
	body := encodeSignedChunks(creds, "s3", region, seed, when, data, chunkSize)
	req.Body = io.NopCloser(bytes.NewReader(body))
	return req, body
}

func signedRequestLen(t *testing.T, creds aws.Credentials, region, target string, length int64, hdr http.Header, when time.Time) *http.Request {
	t.Helper()
	req, _ := http.NewRequest("PUT", "http://127.0.0.1:9"+target, nil)
	req.ContentLength = length
	for k, v := range hdr {
		req.Header[k] = v
	}
	req.Header.Set("X-Amz-Content-Sha256", payloadStreamSigned)
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, req, payloadStreamSigned, "s3", region, when, func(o *v4.SignerOptions) { o.DisableURIPathEscaping = true }); err != nil {
		t.Fatal(err)
	}
	return req
}

func seedSignature(t *testing.T, req *http.Request) []byte {
	t.Helper()
	a, err := parseAuthorization(req.Header.Get("Authorization"))
	if err != nil {
		t.Fatal(err)
	}
	seed, err := hexDecode(a.signature)
	if err != nil {
		t.Fatal(err)
	}
	return seed
}

func TestVerifierAWSChunked(t *testing.T) {
	now := time.Now().UTC()
	v := &sigV4Verifier{Creds: realAWS, Region: awsRegion, Service: "s3"}
	data := testPayload(200*1024 + 5)

	req, body := chunkSignedRequest(t, realAWS, awsRegion, data, 64*1024, now)
	got, err := verifyReq(v, req)
	if err != nil {
		t.Fatalf("chunk-signed with the real key: %v", err)
	}
	if !bytes.Equal(got.Body, data) || got.Chunks != 4 || got.ChunkSigs != 5 {
		t.Fatalf("decoded %d bytes in %d chunks, %d signatures", len(got.Body), got.Chunks, got.ChunkSigs)
	}
	if len(body) != encodedChunkedLength(len(data), 64*1024) {
		t.Fatalf("encoded %d bytes, computed %d", len(body), encodedChunkedLength(len(data), 64*1024))
	}

	// One byte of one chunk changed: that chunk's signature fails.
	req, body = chunkSignedRequest(t, realAWS, awsRegion, data, 64*1024, now)
	i := bytes.Index(body, []byte("\r\n")) + 2 + 70000
	tampered := append([]byte(nil), body...)
	tampered[i] ^= 1
	req.Body = io.NopCloser(bytes.NewReader(tampered))
	_, err = verifyReq(v, req)
	wantCode(t, "a tampered chunk", err, "SignatureDoesNotMatch")

	// Chunks signed with a wrong secret behind a right seed.
	req, _ = chunkSignedRequest(t, realAWS, awsRegion, data, 64*1024, now)
	wrong := realAWS
	wrong.SecretAccessKey = "junk"
	req.Body = io.NopCloser(bytes.NewReader(encodeSignedChunks(wrong, "s3", awsRegion, seedSignature(t, req), now, data, 64*1024)))
	_, err = verifyReq(v, req)
	wantCode(t, "chunks signed with another key", err, "SignatureDoesNotMatch")

	// Chunks re-ordered / the last chunk dropped.
	req, body = chunkSignedRequest(t, realAWS, awsRegion, data, 64*1024, now)
	last := bytes.LastIndex(body[:len(body)-4], []byte("\r\n")) // before the final chunk's header
	req.Body = io.NopCloser(bytes.NewReader(append(append([]byte(nil), body[:bytes.LastIndex(body[:last], []byte("\r\n"))+2]...), body[last+2:]...)))
	if _, err = verifyReq(v, req); err == nil {
		t.Fatal("a body with a chunk dropped passed")
	}

	// The whole thing signed for another region.
	req, _ = chunkSignedRequest(t, realAWS, "eu-west-1", data, 64*1024, now)
	_, err = verifyReq(v, req)
	wantCode(t, "another region", err, "AuthorizationHeaderMalformed")

	// The unsigned trailer form: the trailing checksum is checked.
	for _, c := range []struct {
		name, trailer, code string
	}{
		{"right", "", ""},
		{"wrong", "x-amz-checksum-crc32:AAAAAA==", "BadDigest"},
	} {
		sum, _ := checksumOf("crc32", data)
		tr := "x-amz-checksum-crc32:" + sum
		if c.trailer != "" {
			tr = c.trailer
		}
		enc := encodeUnsignedTrailer(data, 64*1024, tr)
		hdr := http.Header{"Content-Encoding": {"aws-chunked"}, "X-Amz-Trailer": {"x-amz-checksum-crc32"}, "X-Amz-Decoded-Content-Length": {strconv.Itoa(len(data))}}
		req := signedRequest(t, realAWS, "s3", awsRegion, "PUT", "/bkt/trailer", enc, payloadStreamUnsignTrlr, hdr, now)
		got, err := verifyReq(v, req)
		if c.code == "" {
			if err != nil || !bytes.Equal(got.Body, data) || got.Checksum != "crc32:"+sum {
				t.Fatalf("unsigned trailer, %s checksum: %v", c.name, err)
			}
			continue
		}
		wantCode(t, "unsigned trailer, "+c.name+" checksum", err, c.code)
	}
	// The data changed under a right trailer.
	sum, _ := checksumOf("crc32", data)
	enc := encodeUnsignedTrailer(data, 64*1024, "x-amz-checksum-crc32:"+sum)
	enc[10] ^= 1
	req = signedRequest(t, realAWS, "s3", awsRegion, "PUT", "/bkt/trailer", enc, payloadStreamUnsignTrlr,
		http.Header{"Content-Encoding": {"aws-chunked"}, "X-Amz-Trailer": {"x-amz-checksum-crc32"}}, now)
	_, err = verifyReq(v, req)
	wantCode(t, "unsigned trailer, tampered data", err, "BadDigest")
}

// encodeUnsignedTrailer is an aws-chunked body in the
// STREAMING-UNSIGNED-PAYLOAD-TRAILER form, as aws-sdk-go-v2 writes it.
func encodeUnsignedTrailer(data []byte, chunkSize int, trailer string) []byte {
	var b bytes.Buffer
	for len(data) > 0 {
		n := min(chunkSize, len(data))
		fmt.Fprintf(&b, "%x\r\n", n)
		b.Write(data[:n])
		b.WriteString("\r\n")
		data = data[n:]
	}
	b.WriteString("0\r\n" + trailer + "\r\n\r\n")
	return b.Bytes()
}

func TestVerifierPresigned(t *testing.T) {
	now := time.Now().UTC()
	v := &sigV4Verifier{Creds: realAWS, Region: awsRegion, Service: "s3"}
	presign := func(creds aws.Credentials, expires int, when time.Time) string {
		req, _ := http.NewRequest("GET", "http://127.0.0.1:9/bkt/a%20b?x-id=GetObject&X-Amz-Expires="+strconv.Itoa(expires), nil)
		u, _, err := v4.NewSigner().PresignHTTP(context.Background(), creds, req, payloadUnsigned, "s3", awsRegion, when, func(o *v4.SignerOptions) { o.DisableURIPathEscaping = true })
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	check := func(u string) (*verified, error) {
		req, _ := http.NewRequest("GET", u, nil)
		return verifyReq(v, req)
	}
	if got, err := check(presign(realAWS, 900, now)); err != nil || !got.Presigned {
		t.Fatalf("presigned with the real key: %v", err)
	}
	wrong := realAWS
	wrong.SecretAccessKey = "junk"
	_, err := check(presign(wrong, 900, now))
	wantCode(t, "presigned with a wrong secret", err, "SignatureDoesNotMatch")
	_, err = check(strings.Replace(presign(realAWS, 900, now), "x-id=GetObject", "x-id=PutObject", 1))
	wantCode(t, "a tampered presigned query", err, "SignatureDoesNotMatch")
	_, err = check(strings.Replace(presign(realAWS, 900, now), "X-Amz-Expires=900", "X-Amz-Expires=9000", 1))
	wantCode(t, "a lengthened expiry", err, "SignatureDoesNotMatch")
	_, err = check(presign(realAWS, 60, now.Add(-10*time.Minute)))
	wantCode(t, "an expired presigned URL", err, "AccessDenied")
}
