package plugin

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/phantomvault/phantom/internal/reqpath"
	"github.com/phantomvault/phantom/internal/resolve"
)

// Scope: which methods, paths and client addresses a token may use.
//
// Paths are matched byte for byte against the exact path the proxy forwards,
// so anything an upstream could read differently from how we read it is
// refused before matching (reqpath.Validate).
//
// Patterns are absolute paths whose segments are literals, "*" (exactly one
// non-empty segment) or, as the last segment only, "**" (zero or more further
// segments: "/v1/customers/**" matches "/v1/customers" and everything below).

const (
	globOne  = "*"
	globRest = "**"
)

// validatePattern checks an allowed_paths entry.
func validatePattern(p string) error {
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

// matchPath reports whether a valid path matches a valid pattern. It does not
// allocate: it runs on every proxied request.
func matchPath(pattern, path string) bool {
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

// matchAny reports whether path matches any of patterns.
func matchAny(patterns []string, path string) bool {
	for _, p := range patterns {
		if matchPath(p, path) {
			return true
		}
	}
	return false
}

// patternWithin reports whether every path narrow matches is also matched by
// wide.
func patternWithin(narrow, wide string) bool {
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

// narrowPatterns checks that each requested pattern is valid and within one of
// the route's patterns.
func narrowPatterns(requested, route []string) error {
	for _, p := range requested {
		if err := validatePattern(p); err != nil {
			return err
		}
		if !slices.ContainsFunc(route, func(w string) bool { return patternWithin(p, w) }) {
			return fmt.Errorf("allowed_paths entry %q is wider than the route allows (%s)", p, strings.Join(route, ", "))
		}
	}
	return nil
}

// normalizeMethods upper-cases and validates HTTP methods by the rule the
// proxy applies (resolve.ValidMethod), so a route cannot allow a method the
// proxy would refuse; CONNECT and TRACE may never be allowed.
func normalizeMethods(in []string) ([]string, error) {
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

// parseCIDRs parses bound_cidrs entries; a bare address is a single-host prefix.
func parseCIDRs(in []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(in))
	for _, s := range in {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !strings.Contains(s, "/") {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("%q is not an IP address or CIDR block", s)
			}
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, fmt.Errorf("%q is not an IP address or CIDR block", s)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// boundCIDRs is a bound_cidrs list, parsed once: when its route or token
// record is decoded, not on every resolve.
type boundCIDRs struct {
	limited  bool           // the list is not empty: only addresses in prefixes pass
	prefixes []netip.Prefix // nil when an entry does not parse: nothing passes
}

func parseBoundCIDRs(list []string) *boundCIDRs {
	prefixes, err := parseCIDRs(list)
	if err != nil {
		prefixes = nil
	}
	return &boundCIDRs{limited: len(list) > 0, prefixes: prefixes}
}

// orParse returns c, or list parsed when c is nil (a record built in
// memory, not decoded).
func (c *boundCIDRs) orParse(list []string) *boundCIDRs {
	if c != nil {
		return c
	}
	return parseBoundCIDRs(list)
}

// allows reports whether a client at addr (invalid when the proxy sent none)
// passes.
func (c *boundCIDRs) allows(addr netip.Addr) bool {
	return !c.limited || addr.IsValid() && containsAddr(c.prefixes, addr)
}

// prefixWithin reports whether every address in narrow is in wide.
func prefixWithin(narrow, wide netip.Prefix) bool {
	return wide.Bits() <= narrow.Bits() && wide.Contains(narrow.Addr())
}

// containsAddr reports whether addr is in any of prefixes.
func containsAddr(prefixes []netip.Prefix, addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, p := range prefixes {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

func prefixStrings(in []netip.Prefix) []string {
	out := make([]string, len(in))
	for i, p := range in {
		out[i] = p.String()
	}
	return out
}
