// Package scope is the pure logic of a token's scope: which paths, methods
// and client addresses it may use, and whether a mint's scope lies within
// its route's. It knows nothing of Vault, so the engine and the proxy can
// test it alone.
//
// Paths are matched byte for byte against the exact path the proxy forwards,
// so anything an upstream could read differently from how we read it is
// refused before matching (reqpath.Validate).
//
// Patterns are absolute paths whose segments are literals, "*" (exactly one
// non-empty segment) or, as the last segment only, "**" (zero or more further
// segments: "/v1/customers/**" matches "/v1/customers" and everything below).
package scope

import (
	"fmt"
	"slices"
	"strings"

	"github.com/phantomvault/phantom/internal/reqpath"
)

const (
	globOne  = "*"
	globRest = "**"
)

// ValidatePattern checks an allowed_paths entry.
func ValidatePattern(p string) error {
	if err := reqpath.Validate(p); err != nil {
		return fmt.Errorf("path pattern %q %w", p, err)
	}
	segs := strings.Split(p[1:], "/")
	for i, s := range segs {
		switch {
		case s == globRest && i != len(segs)-1:
			return fmt.Errorf("path pattern %q: ** is allowed only as the last segment", p)
		case s != globOne && s != globRest && strings.Contains(s, "*"):
			return fmt.Errorf("path pattern %q: * and ** must be whole segments", p)
		}
	}
	return nil
}

// MatchPath reports whether a valid path matches a valid pattern.
func MatchPath(pattern, path string) bool {
	// No allocation: this runs on every proxied request.
	pat, rest := pattern[1:], path[1:]
	for {
		var p, s string
		var patMore, pathMore bool
		p, pat, patMore = strings.Cut(pat, "/")
		if p == globRest {
			return true
		}
		s, rest, pathMore = strings.Cut(rest, "/")
		if p == globOne {
			if s == "" {
				return false
			}
		} else if p != s {
			return false
		}
		if !patMore || !pathMore {
			if patMore {
				// The path ended; only a trailing ** matches nothing more.
				return pat == globRest
			}
			return !pathMore
		}
	}
}

// MatchAny reports whether path matches any of patterns.
func MatchAny(patterns []string, path string) bool {
	for _, p := range patterns {
		if MatchPath(p, path) {
			return true
		}
	}
	return false
}

// PatternWithin reports whether every path narrow matches is also matched by wide.
func PatternWithin(narrow, wide string) bool {
	n := strings.Split(narrow[1:], "/")
	w := strings.Split(wide[1:], "/")
	for i, ws := range w {
		if ws == globRest {
			return true
		}
		if i >= len(n) {
			return false
		}
		switch ns := n[i]; {
		case ns == globRest:
			return false
		case ws == globOne:
			if ns == "" {
				return false
			}
		case ws != ns:
			return false
		}
	}
	return len(n) == len(w)
}

// NarrowPatterns checks that each requested pattern is valid and within one of route's.
func NarrowPatterns(requested, route []string) error {
	for _, p := range requested {
		if err := ValidatePattern(p); err != nil {
			return err
		}
		if !slices.ContainsFunc(route, func(w string) bool { return PatternWithin(p, w) }) {
			return fmt.Errorf("allowed_paths entry %q is wider than the route allows (%s)", p, strings.Join(route, ", "))
		}
	}
	return nil
}
