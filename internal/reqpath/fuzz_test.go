package reqpath

import (
	"net/url"
	"strings"
	"testing"

	"golang.org/x/text/unicode/norm"
)

// FuzzValidate: whatever Validate accepts decodes to a path without dot
// segments, empty segments, backslashes or NUL, so no upstream decoding can
// turn an allowed path into another one.
func FuzzValidate(f *testing.F) {
	for _, s := range []string{"/v1/customers", "/v1/%2e%2e/x", "/a/%2F/b", "/%C0%AE", "/a%20b", "/a/./b", "//", "/%25", "/é", "/a/%EF%BC%8E%EF%BC%8E/b", "/a%EF%BC%8Fb"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if Validate(p) != nil {
			return
		}
		decoded, err := url.PathUnescape(p)
		if err != nil {
			t.Fatalf("accepted %q, which does not decode: %v", p, err)
		}
		if !strings.HasPrefix(decoded, "/") || strings.Contains(decoded, "//") || strings.ContainsAny(decoded, "\\\x00?#;") {
			t.Fatalf("accepted %q, which decodes to %q", p, decoded)
		}
		// An upstream that applies NFKC must read the same structure.
		nf := norm.NFKC.String(decoded)
		if strings.Count(nf, "/") != strings.Count(decoded, "/") || strings.Count(nf, ".") != strings.Count(decoded, ".") || strings.ContainsAny(nf, "\\\x00?#;%") != strings.ContainsAny(decoded, "\\\x00?#;%") {
			t.Fatalf("accepted %q, whose NFKC form %q reads differently", p, nf)
		}
		for _, seg := range strings.Split(decoded[1:], "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("accepted %q, which decodes to a dot segment: %q", p, decoded)
			}
		}
		if strings.Count(p, "/") != strings.Count(decoded, "/") {
			t.Fatalf("accepted %q, whose decoding %q has other separators", p, decoded)
		}
	})
}
