package sigv4

import (
	"encoding/hex"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// AWS's own worked examples hold the algorithm: the IAM request of the
// SigV4 guide, and the S3 chunked upload of "Signature Calculations for the
// Authorization Header: Transferring Payload in Multiple Chunks".

func TestSigningKeyAndRequestAsAWSDocuments(t *testing.T) {
	key := SigningKey("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20150830", "us-east-1", "iam")
	if got := hex.EncodeToString(key); got != "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9" {
		t.Fatalf("signing key %s", got)
	}
	s := &Signer{Key: key, AccessKeyID: "AKIDEXAMPLE", Date: "20150830", Region: "us-east-1", Service: "iam"}
	out, _ := http.NewRequest("GET", "https://iam.amazonaws.com/?Version=2010-05-08&Action=ListUsers", nil)
	out.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	out.Header.Set("User-Agent", "not signed")
	sig, err := s.SignRequest(out, "20150830T123600Z", EmptySHA256, "", true)
	if err != nil {
		t.Fatal(err)
	}
	if sig != "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7" {
		t.Fatalf("signature %s", sig)
	}
	want := "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=" + sig
	if got := out.Header.Get("Authorization"); got != want {
		t.Fatalf("Authorization %q", got)
	}
}

func TestChunkSignaturesAsAWSDocuments(t *testing.T) {
	s := &Signer{Key: SigningKey("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "20130524", "us-east-1", "s3"),
		AccessKeyID: "AKIAIOSFODNN7EXAMPLE", Date: "20130524", Region: "us-east-1", Service: "s3"}
	const date, seed = "20130524T000000Z", "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
	var body strings.Builder
	for _, size := range []int{65536, 1024, 0} {
		body.WriteString(strings.ToLower(hexSize(size)) + ";chunk-signature=" + strings.Repeat("0", 64) + "\r\n" + strings.Repeat("a", size) + "\r\n")
	}
	out, err := io.ReadAll(s.ResignChunks(io.NopCloser(strings.NewReader(body.String())), date, seed, false))
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != body.Len() {
		t.Fatalf("%d bytes out of %d", len(out), body.Len())
	}
	for _, sig := range []string{
		"ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648",
		"0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497",
		"b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9",
	} {
		if !strings.Contains(string(out), "chunk-signature="+sig+"\r\n") {
			t.Errorf("no chunk signed %s", sig)
		}
	}
}

func hexSize(n int) string {
	return strings.TrimLeft(hex.EncodeToString([]byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}), "0") + map[bool]string{true: "0"}[n == 0]
}

func TestTrailerIsResigned(t *testing.T) {
	s := &Signer{Key: SigningKey("secret", "20261207", "us-east-1", "s3"), AccessKeyID: "AKID", Date: "20261207", Region: "us-east-1", Service: "s3"}
	zero := strings.Repeat("0", 64)
	body := "5;chunk-signature=" + zero + "\r\nhello\r\n0;chunk-signature=" + zero + "\r\nx-amz-checksum-crc32:NhCmhg==\r\nx-amz-trailer-signature:" + zero + "\r\n\r\n"
	out, err := io.ReadAll(s.ResignChunks(io.NopCloser(strings.NewReader(body)), "20261207T000000Z", "seed", true))
	if err != nil {
		t.Fatal(err)
	}
	first := s.ChunkSignature("20261207T000000Z", "seed", []byte("hello"))
	last := s.ChunkSignature("20261207T000000Z", first, nil)
	trailer := s.TrailerSignature("20261207T000000Z", last, "x-amz-checksum-crc32:NhCmhg==\n")
	want := "5;chunk-signature=" + first + "\r\nhello\r\n0;chunk-signature=" + last + "\r\nx-amz-checksum-crc32:NhCmhg==\r\nx-amz-trailer-signature:" + trailer + "\r\n\r\n"
	if string(out) != want {
		t.Fatalf("got\n%q\nwant\n%q", out, want)
	}
}

func TestMalformedChunksAreErrors(t *testing.T) {
	s := &Signer{Key: []byte("k")}
	zero := strings.Repeat("0", 64)
	for _, body := range []string{
		"5;chunk-signature=" + zero + "\r\nhel",        // ends early
		"5;chunk-signature=" + zero + "\r\nhello!\r\n", // longer than its size
		"zz;chunk-signature=" + zero + "\r\n",          // size not hex
		"5\r\nhello\r\n",                               // no signature
		"800001;chunk-signature=" + zero + "\r\n",      // over MaxChunk
		"0;chunk-signature=" + zero + "\r\nx",          // no empty line
		strings.Repeat("a", 5000),                      // a line too long
	} {
		if _, err := io.ReadAll(s.ResignChunks(io.NopCloser(strings.NewReader(body)), "d", "seed", false)); err == nil {
			t.Errorf("%.40q: no error", body)
		}
	}
}

func TestSigningTimeStaysOnTheKeysDay(t *testing.T) {
	at := func(s string) time.Time { v, _ := time.Parse(time.RFC3339, s); return v }
	for _, c := range []struct{ now, day, want string }{
		{"2026-12-07T10:11:12Z", "20261207", "20261207T101112Z"},
		{"2026-12-08T00:00:03Z", "20261207", "20261207T235959Z"},
		{"2026-12-06T23:59:58Z", "20261207", "20261207T000000Z"},
	} {
		if got := SigningTime(at(c.now), c.day); got != c.want {
			t.Errorf("%s with a key of %s: %s", c.now, c.day, got)
		}
	}
}

func TestCanonicalQuery(t *testing.T) {
	got, err := canonicalQuery("b=2&a=x%20y&a=%2A&c&prefix=a+b&k=%7E")
	if err != nil {
		t.Fatal(err)
	}
	if want := "a=%2A&a=x%20y&b=2&c=&k=~&prefix=a%20b"; got != want {
		t.Fatalf("%s, want %s", got, want)
	}
	if _, err := canonicalQuery("a=%zz"); err == nil {
		t.Fatal("bad escaping accepted")
	}
}

func TestCredentialFromAuthorization(t *testing.T) {
	c, ok := FromAuthorization("AWS4-HMAC-SHA256 Credential=phm_abc/20261207/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=00")
	if !ok || c.AccessKeyID != "phm_abc" || c.Service != "s3" || c.Region != "us-east-1" {
		t.Fatalf("%+v %v", c, ok)
	}
	for _, bad := range []string{"Bearer x", "AWS4-HMAC-SHA256 SignedHeaders=host", "AWS4-HMAC-SHA256 Credential=a/b/c"} {
		if _, ok := FromAuthorization(bad); ok {
			t.Errorf("%q read as a credential", bad)
		}
	}
	q, _ := url.ParseQuery("X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=phm_abc%2F20261207%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20261207T100000Z&X-Amz-Expires=900&X-Amz-Signature=00")
	c, signed, expires, ok := Presigned(q)
	if !ok || c.AccessKeyID != "phm_abc" || !signed.Equal(time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)) || !expires.Equal(time.Date(2026, 12, 7, 10, 15, 0, 0, time.UTC)) {
		t.Fatalf("%+v %v %v", c, expires, ok)
	}
}
