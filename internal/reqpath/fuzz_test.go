package reqpath

import (
	"net/url"
	"strings"
	"testing"
)

// FuzzValidate: whatever Validate accepts decodes to a path without dot
// segments, empty segments, backslashes or NUL, so no upstream decoding can
// turn an allowed path into another one.
func FuzzValidate(f *testing.F) {
	for _, s := range []string{"/v1/customers", "/v1/%2e%2e/x", "/a/%2F/b", "/%C0%AE", "/a%20b", "/a/./b", "//", "/%25", "/é"} {
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
