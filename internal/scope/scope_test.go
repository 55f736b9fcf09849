package scope

import (
	"net/netip"
	"testing"
)

func TestMatchPath(t *testing.T) {
	tests := []struct {
		pattern, path string
		want          bool
	}{
		{"/v1/customers", "/v1/customers", true},
		{"/v1/customers", "/v1/customers/", false},
		{"/v1/customers", "/v1/customers/cus_1", false},
		{"/v1/customers", "/v1/Customers", false}, // case-sensitive
		{"/v1/customers", "/v1/customer", false},
		{"/v1/customers", "/v1/customersX", false},
		{"/v1/*", "/v1/customers", true},
		{"/v1/*", "/v1/", false}, // * needs a non-empty segment
		{"/v1/*", "/v1", false},
		{"/v1/*", "/v1/a/b", false},
		{"/v1/*/refunds", "/v1/ch_1/refunds", true},
		{"/v1/*/refunds", "/v1/ch_1/refunds/re_1", false},
		{"/v1/*/refunds", "/v1//refunds", false},
		{"/v1/customers/**", "/v1/customers", true}, // ** is zero or more
		{"/v1/customers/**", "/v1/customers/", true},
		{"/v1/customers/**", "/v1/customers/cus_1", true},
		{"/v1/customers/**", "/v1/customers/cus_1/sources/src_1", true},
		{"/v1/customers/**", "/v1/customersX", false},
		{"/v1/customers/**", "/v1/charges", false},
		{"/v1/customers/**", "/v1", false},
		{"/v1/*/**", "/v1", false},
		{"/v1/*/**", "/v1/a", true},
		{"/v1/*/**", "/v1/a/b/c", true},
		{"/**", "/", true},
		{"/**", "/anything/at/all", true},
		{"/", "/", true},
		{"/", "/a", false},
		{"/a/b", "/a", false},
		{"/a", "/a/b", false},
	}
	for _, tt := range tests {
		if got := MatchPath(tt.pattern, tt.path); got != tt.want {
			t.Errorf("MatchPath(%q, %q) = %v, want %v", tt.pattern, tt.path, got, tt.want)
		}
	}
}

func TestValidatePattern(t *testing.T) {
	for _, p := range []string{"/v1/customers/**", "/v1/*/refunds", "/**", "/", "/v1/*"} {
		if err := ValidatePattern(p); err != nil {
			t.Errorf("ValidatePattern(%q) = %v", p, err)
		}
	}
	for _, p := range []string{"v1", "/v1/**/x", "/v1/cus_*", "/v1/***", "/v1/../x", "/v1//x", "/v1/%2F"} {
		if err := ValidatePattern(p); err == nil {
			t.Errorf("ValidatePattern(%q) = nil, want an error", p)
		}
	}
}

func TestPatternWithin(t *testing.T) {
	tests := []struct {
		narrow, wide string
		want         bool
	}{
		{"/v1/customers/**", "/v1/customers/**", true},
		{"/v1/customers/cus_1", "/v1/customers/**", true},
		{"/v1/customers", "/v1/customers/**", true},
		{"/v1/customers/*/sources", "/v1/customers/**", true},
		{"/v1/customers/*", "/v1/customers/*", true},
		{"/v1/customers/cus_1", "/v1/customers/*", true},
		{"/v1/customers/", "/v1/customers/*", false},
		{"/v1/customers/**", "/v1/customers/*", false},
		{"/v1/customers/*", "/v1/customers/cus_1", false},
		{"/v1/**", "/v1/customers/**", false},
		{"/v1/charges", "/v1/customers/**", false},
		{"/v1/customers/a/b", "/v1/customers/*", false},
		{"/v1", "/v1/*", false},
		{"/anything", "/**", true},
	}
	for _, tt := range tests {
		if got := PatternWithin(tt.narrow, tt.wide); got != tt.want {
			t.Errorf("PatternWithin(%q, %q) = %v, want %v", tt.narrow, tt.wide, got, tt.want)
		}
	}
	// Consistency with the matcher: whatever the narrow pattern matches, the
	// wide one must too.
	paths := []string{"/v1", "/v1/customers", "/v1/customers/", "/v1/customers/cus_1", "/v1/customers/cus_1/sources", "/v1/charges"}
	for _, tt := range tests {
		if !tt.want {
			continue
		}
		for _, p := range paths {
			if MatchPath(tt.narrow, p) && !MatchPath(tt.wide, p) {
				t.Errorf("%q within %q, yet only the narrow one matches %q", tt.narrow, tt.wide, p)
			}
		}
	}
}

func TestNormalizeMethods(t *testing.T) {
	got, err := NormalizeMethods([]string{"get", " POST ", "GET", ""})
	if err != nil || len(got) != 2 || got[0] != "GET" || got[1] != "POST" {
		t.Fatalf("normalizeMethods = %v, %v", got, err)
	}
	for _, bad := range []string{"CONNECT", "trace", "GE T", "G\x00", "get/"} {
		if _, err := NormalizeMethods([]string{bad}); err == nil {
			t.Errorf("NormalizeMethods(%q) accepted it", bad)
		}
	}
}

func TestCIDRs(t *testing.T) {
	ps, err := ParseCIDRs([]string{"10.0.0.0/8", "192.0.2.7", "2001:db8::/32", "10.1.2.3/8"})
	if err != nil {
		t.Fatal(err)
	}
	if got := PrefixStrings(ps); got[1] != "192.0.2.7/32" || got[3] != "10.0.0.0/8" {
		t.Fatalf("parseCIDRs normalised to %v", got)
	}
	for addr, want := range map[string]bool{"10.9.9.9": true, "192.0.2.7": true, "192.0.2.8": false, "2001:db8::1": true, "::ffff:10.0.0.1": true, "11.0.0.1": false} {
		if got := containsAddr(ps, netip.MustParseAddr(addr)); got != want {
			t.Errorf("containsAddr(%s) = %v, want %v", addr, got, want)
		}
	}
	if _, err := ParseCIDRs([]string{"10.0.0.0/33"}); err == nil {
		t.Error("accepted /33")
	}
	if _, err := ParseCIDRs([]string{"example.com"}); err == nil {
		t.Error("accepted a host name")
	}
	if !PrefixWithin(netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("10.0.0.0/8")) ||
		PrefixWithin(netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("10.1.0.0/16")) ||
		PrefixWithin(netip.MustParsePrefix("11.0.0.0/16"), netip.MustParsePrefix("10.0.0.0/8")) {
		t.Error("PrefixWithin is wrong")
	}
	route := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	if _, wider := WiderPrefix(ps[:1], route); wider {
		t.Error("WiderPrefix: 10.0.0.0/8 is within itself")
	}
	if p, wider := WiderPrefix(ps, route); !wider || p.String() != "192.0.2.7/32" {
		t.Errorf("WiderPrefix = %v, %v; want 192.0.2.7/32", p, wider)
	}
	if _, wider := WiderPrefix(ps, nil); wider {
		t.Error("WiderPrefix: a route without bound_cidrs bounds nothing")
	}
}

func BenchmarkMatchPath(b *testing.B) {
	for b.Loop() {
		if !MatchPath("/v1/customers/*/sources/**", "/v1/customers/cus_123/sources/src_1/verify") {
			b.Fatal("no match")
		}
	}
}
