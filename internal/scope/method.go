package scope

import (
	"fmt"
	"slices"
	"strings"

	"github.com/phantomvault/phantom/internal/resolve"
)

// NormalizeMethods upper-cases, validates and deduplicates HTTP methods.
func NormalizeMethods(in []string) ([]string, error) {
	// The proxy's own rule (resolve.ValidMethod), so that a route cannot
	// allow a method the proxy would refuse; CONNECT and TRACE never pass.
	out := make([]string, 0, len(in))
	for _, m := range in {
		m = strings.ToUpper(strings.TrimSpace(m))
		switch {
		case m == "":
			continue
		case resolve.NeverAllowed(m):
			return nil, fmt.Errorf("method %s can never be allowed", m)
		case !resolve.ValidMethod(m):
			return nil, fmt.Errorf("%q is not an HTTP method: a method is upper-case letters only", m)
		}
		if !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	return out, nil
}
