package limits

import (
	"testing"
)

func TestModelWithin(t *testing.T) {
	for _, c := range []struct {
		narrow, wide string
		want         bool
	}{
		{"gpt-4o-mini", "gpt-4o*", true},
		{"gpt-4o*", "gpt-4o*", true},
		{"gpt-4o-*", "gpt-4o*", true},
		{"gpt-4*", "gpt-4o*", false},
		{"*", "gpt-*", false},
		{"claude-3-5-haiku-*", "claude-*", true},
		{"claude-*-haiku", "claude-*", true},
		{"a*", "*b", false},
	} {
		if got := ModelWithin(c.narrow, c.wide); got != c.want {
			t.Errorf("ModelWithin(%q, %q) = %v, want %v", c.narrow, c.wide, got, c.want)
		}
	}
	if m, none := EffectiveModels([]string{"gpt-4o*"}, []string{"gpt-4o-mini"}); none || len(m) != 1 || m[0] != "gpt-4o-mini" {
		t.Errorf("route narrowed after mint: %v %v", m, none)
	}
	if m, none := EffectiveModels([]string{"a*"}, []string{"*b"}); !none {
		t.Errorf("disjoint lists: %v %v, want none", m, none)
	}
	if m, _ := EffectiveModels(nil, []string{"x"}); len(m) != 1 {
		t.Errorf("route only: %v", m)
	}
}
