package limits

import (
	"testing"
	"time"
)

func TestParseRateLimit(t *testing.T) {
	for in, want := range map[string]*Rate{
		"":        nil,
		"0":       nil,
		"60/1m":   {N: 60, Period: time.Minute},
		"10/1s":   {N: 10, Period: time.Second},
		"1000/1h": {N: 1000, Period: time.Hour},
		"5/30":    {N: 5, Period: 30 * time.Second},
		" 2/24h ": {N: 2, Period: 24 * time.Hour},
	} {
		got, err := ParseRate(in)
		if err != nil || (got == nil) != (want == nil) || got != nil && *got != *want {
			t.Errorf("ParseRate(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"60", "0/1m", "-1/1m", "60/0s", "60/500ms", "60/25h", "x/1m", "60/x", "1.5/1m", "2000000000/1h"} {
		if r, err := ParseRate(bad); err == nil {
			t.Errorf("ParseRate(%q) = %v, want an error", bad, r)
		}
	}
	if s := (&Rate{N: 60, Period: time.Minute}).String(); s != "60/1m" {
		t.Errorf("String = %q", s)
	}
	for in, want := range map[string]string{"3/90m": "3/1h30m", "10/10s": "10/10s", "5/20m": "5/20m", "1/2h": "1/2h", "2/1.5s": "2/1.5s", "4/3600": "4/1h"} {
		if r, err := ParseRate(in); err != nil || r.String() != want {
			t.Errorf("%s reads back as %q (%v), want %q", in, r, err, want)
		}
	}
}

func TestRateWithin(t *testing.T) {
	route := &Rate{N: 60, Period: time.Minute}
	for _, c := range []struct {
		mint string
		want bool
	}{
		{"60/1m", true},
		{"30/1m", true},
		{"1/1s", true},    // same rate, smaller burst
		{"2/1s", false},   // higher rate
		{"61/1m", false},  // higher rate and burst
		{"120/2m", false}, // same rate, larger burst
		{"60/2m", true},
		{"50/1h", true},
		{"100/1h", false}, // lower rate, larger burst
	} {
		r, err := ParseRate(c.mint)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.Within(route); got != c.want {
			t.Errorf("%s within 60/1m = %v, want %v", c.mint, got, c.want)
		}
	}
	if !(&Rate{N: 1, Period: time.Second}).Within(nil) || (*Rate)(nil).Within(route) {
		t.Error("within a route without a limit / no limit within a limit")
	}
}

// TestStricterRateAdmitsOnlyWhatBothAdmit: the combined limit is as strict
// as each of its parts, checked on a simulated stream of requests.
func TestStricterRateAdmitsOnlyWhatBothAdmit(t *testing.T) {
	a, b := &Rate{N: 10, Period: time.Second}, &Rate{N: 100, Period: time.Minute}
	c := StricterRate(a, b)
	start := time.Unix(1000, 0)
	la, lb, lc := NewLimiter(), NewLimiter(), NewLimiter()
	for i := range 2000 {
		now := start.Add(time.Duration(i) * 37 * time.Millisecond)
		if ok, _ := lc.Allow(now, Check{Key: "k", Rate: c}, Check{}); ok {
			okA, _ := la.Allow(now, Check{Key: "k", Rate: a}, Check{})
			okB, _ := lb.Allow(now, Check{Key: "k", Rate: b}, Check{})
			if !okA || !okB {
				t.Fatalf("request %d admitted by the combination (%v) but not by %v (%v) or %v (%v)", i, c, a, okA, b, okB)
			}
		}
	}
	if StricterRate(a, nil) != a || StricterRate(nil, b) != b || StricterRate(a, &Rate{N: 20, Period: time.Second}) != a {
		t.Error("stricterRate should return the stricter limit when one lies within the other")
	}
}
