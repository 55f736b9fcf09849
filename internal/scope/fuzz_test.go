package scope

import (
	"regexp"
	"strings"
	"testing"

	"github.com/phantomvault/phantom/internal/reqpath"
)

// referenceMatch is the glob rule written the obvious, slow way.
func referenceMatch(pattern, path string) bool {
	var re strings.Builder
	re.WriteString("^")
	segs := strings.Split(pattern[1:], "/")
	for i, s := range segs {
		switch {
		case s == globRest && i == len(segs)-1:
			re.WriteString("(?:/.*)?")
		case s == globOne:
			re.WriteString("/[^/]+")
		default:
			re.WriteString("/" + regexp.QuoteMeta(s))
		}
	}
	re.WriteString("$")
	return regexp.MustCompile(re.String()).MatchString(path)
}

// FuzzMatchPath checks the fast matcher against the reference for every
// valid pattern and path, and PatternWithin against both.
func FuzzMatchPath(f *testing.F) {
	for _, s := range [][2]string{
		{"/v1/customers/**", "/v1/customers"}, {"/v1/*/refunds", "/v1/ch_1/refunds"}, {"/**", "/"},
		{"/", "/"}, {"/v1/*", "/v1/"}, {"/a/**", "/a/"}, {"/a/*/**", "/a"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, path string) {
		if ValidatePattern(pattern) != nil || reqpath.Validate(path) != nil {
			return
		}
		got, want := MatchPath(pattern, path), referenceMatch(pattern, path)
		if got != want {
			t.Fatalf("MatchPath(%q, %q) = %v, reference says %v", pattern, path, got, want)
		}
		// A pattern is within itself and within "/**".
		if !PatternWithin(pattern, pattern) || !PatternWithin(pattern, "/**") {
			t.Fatalf("PatternWithin is not reflexive for %q", pattern)
		}
	})
}
