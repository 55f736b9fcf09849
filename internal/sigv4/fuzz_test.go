package sigv4

import (
	"io"
	"strings"
	"testing"
)

// FuzzResignChunks: whatever an agent sends as a signed streaming body, the
// re-signer never panics, and what it passes on has the same length (so
// Content-Length holds) and the same bytes but the signatures.
func FuzzResignChunks(f *testing.F) {
	zero := strings.Repeat("0", 64)
	f.Add("5;chunk-signature="+zero+"\r\nhello\r\n0;chunk-signature="+zero+"\r\n\r\n", false)
	f.Add("0;chunk-signature="+zero+"\r\nx-amz-checksum-crc32:AAAA\r\nx-amz-trailer-signature:"+zero+"\r\n\r\n", true)
	f.Add("5;chunk-signature="+zero+"\r\nhel", false)
	s := &Signer{Key: SigningKey("k", "20261207", "us-east-1", "s3"), AccessKeyID: "AKID", Date: "20261207", Region: "us-east-1", Service: "s3"}
	f.Fuzz(func(t *testing.T, body string, trailer bool) {
		out, err := io.ReadAll(s.ResignChunks(io.NopCloser(strings.NewReader(body)), "20261207T000000Z", "seed", trailer))
		if err != nil {
			return
		}
		if len(out) != len(body) {
			t.Fatalf("%d bytes in, %d out", len(body), len(out))
		}
	})
}
