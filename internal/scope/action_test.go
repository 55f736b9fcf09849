package scope

import "testing"

func TestMatchAction(t *testing.T) {
	for _, c := range []struct {
		pattern, action string
		want            bool
	}{
		{"s3:GetObject", "s3:GetObject", true},
		{"s3:GetObject", "s3:GetObjectAcl", false},
		{"s3:Get*", "s3:GetObjectAcl", true},
		{"s3:Get*", "s3:PutObject", false},
		{"s3:*", "s3:PutObject", true},
		{"s3:*", "sqs:SendMessage", false},
		{"s3:*Object", "s3:GetObject", true},
		{"s3:*Object", "s3:GetObjectAcl", false},
		{"s3:*Object*", "s3:HeadObjectX", true},
		{"s3:Get*", "s3:", false},
		{"s3:*", "", false},
	} {
		if got := MatchAction(c.pattern, c.action); got != c.want {
			t.Errorf("MatchAction(%q, %q) = %v", c.pattern, c.action, got)
		}
	}
}

func TestNarrowActions(t *testing.T) {
	route := []string{"s3:Get*", "s3:ListObjectsV2"}
	for _, ok := range [][]string{{"s3:GetObject"}, {"s3:GetObject*"}, {"s3:Get*"}, {"s3:ListObjectsV2"}} {
		if err := NarrowActions(ok, route); err != nil {
			t.Errorf("%v: %v", ok, err)
		}
	}
	for _, wider := range [][]string{{"s3:*"}, {"s3:PutObject"}, {"s3:List*"}, {"*:GetObject"}, {"s3"}, {"s3:Get Object"}} {
		if err := NarrowActions(wider, route); err == nil {
			t.Errorf("%v narrowed %v", wider, route)
		}
	}
}
