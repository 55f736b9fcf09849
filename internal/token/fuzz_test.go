package token

import (
	"bytes"
	"testing"
)

// FuzzCheck: Check never panics; every token New makes passes; any single
// byte changed in it fails.
func FuzzCheck(f *testing.F) {
	f.Add([]byte("0123456789abcdef0123456789abcdef"), "phm_", 5, byte('x'))
	f.Add(make([]byte, 32), "sk-proj-", 0, byte('0'))
	f.Fuzz(func(t *testing.T, random []byte, prefix string, pos int, b byte) {
		Check(prefix) // arbitrary input: must not panic
		if len(random) < randomBytes || !ValidPrefix(prefix) {
			return
		}
		tok, err := New(bytes.NewReader(random), prefix)
		if err != nil {
			t.Fatal(err)
		}
		if err := Check(tok); err != nil {
			t.Fatalf("New made %q, which Check refuses: %v", tok, err)
		}
		if pos < 0 {
			pos = -pos
		}
		i := len(prefix) + pos%(len(tok)-len(prefix))
		if tok[i] == b {
			return
		}
		changed := tok[:i] + string(b) + tok[i+1:]
		if Check(changed) == nil {
			t.Fatalf("changing byte %d of %q to %q still passes", i, tok, b)
		}
	})
}
