package version

import (
	"regexp"
	"runtime"
	"strings"
	"testing"
)

func TestVersionIsSemantic(t *testing.T) {
	// Vault refuses a plugin that reports a version not of this form.
	if !regexp.MustCompile(`^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$`).MatchString(Version) {
		t.Fatalf("Version %q is not a semantic version like v1.2.3", Version)
	}
}

func TestString(t *testing.T) {
	got := String("phantom-proxy")
	for _, want := range []string{"phantom-proxy ", Version, "commit " + Commit, runtime.Version()} {
		if !strings.Contains(got, want) {
			t.Errorf("String() = %q, lacks %q", got, want)
		}
	}
}
