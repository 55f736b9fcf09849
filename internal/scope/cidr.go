package scope

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// ParseCIDRs parses bound_cidrs entries; a bare address is a single-host prefix.
func ParseCIDRs(in []string) ([]netip.Prefix, error) {
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

// BoundCIDRs is a bound_cidrs list, parsed once: when its route or token
// record is decoded, not on every resolve.
type BoundCIDRs struct {
	limited  bool           // the list is not empty: only addresses in prefixes pass
	prefixes []netip.Prefix // nil when an entry does not parse: nothing passes
}

// ParseBoundCIDRs parses list; an entry that does not parse lets no address pass.
func ParseBoundCIDRs(list []string) *BoundCIDRs {
	prefixes, err := ParseCIDRs(list)
	if err != nil {
		prefixes = nil
	}
	return &BoundCIDRs{limited: len(list) > 0, prefixes: prefixes}
}

// OrParse returns c, or list parsed when c is nil (a record built in memory, not decoded).
func (c *BoundCIDRs) OrParse(list []string) *BoundCIDRs {
	if c != nil {
		return c
	}
	return ParseBoundCIDRs(list)
}

// Allows reports whether a client at addr (invalid when unknown) passes.
func (c *BoundCIDRs) Allows(addr netip.Addr) bool {
	return !c.limited || addr.IsValid() && containsAddr(c.prefixes, addr)
}

// PrefixWithin reports whether every address in narrow is in wide.
func PrefixWithin(narrow, wide netip.Prefix) bool {
	return wide.Bits() <= narrow.Bits() && wide.Contains(narrow.Addr())
}

// WiderPrefix returns the first of requested within none of route; an empty route bounds nothing.
func WiderPrefix(requested, route []netip.Prefix) (netip.Prefix, bool) {
	if len(route) == 0 {
		return netip.Prefix{}, false
	}
	for _, c := range requested {
		if !slices.ContainsFunc(route, func(w netip.Prefix) bool { return PrefixWithin(c, w) }) {
			return c, true
		}
	}
	return netip.Prefix{}, false
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

// PrefixStrings formats prefixes as bound_cidrs entries.
func PrefixStrings(in []netip.Prefix) []string {
	out := make([]string, len(in))
	for i, p := range in {
		out[i] = p.String()
	}
	return out
}
