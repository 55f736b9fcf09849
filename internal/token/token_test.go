package token

import (
	"bytes"
	"crypto/rand"
	"strings"
	"testing"
)

func TestTokenFormat(t *testing.T) {
	seen := map[string]bool{}
	for _, prefix := range []string{DefaultPrefix, "sk-proj-", "x"} {
		for range 50 {
			tok, err := New(rand.Reader, prefix)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(tok, prefix) || len(tok) != len(prefix)+suffixLen {
				t.Fatalf("token %q has the wrong shape", tok)
			}
			if err := Check(tok); err != nil {
				t.Fatalf("Check(fresh token) = %v", err)
			}
			if seen[tok] {
				t.Fatal("duplicate token")
			}
			seen[tok] = true
		}
	}
}

func TestTokenFromShortOrZeroRandomness(t *testing.T) {
	// All-zero randomness still yields a full-width body with a checksum.
	tok, err := New(bytes.NewReader(make([]byte, 32)), "phm_")
	if err != nil {
		t.Fatal(err)
	}
	if want := "phm_" + strings.Repeat("0", BodyLen); !strings.HasPrefix(tok, want) {
		t.Fatalf("token %q", tok)
	}
	if _, err := New(bytes.NewReader(make([]byte, 5)), "phm_"); err == nil {
		t.Fatal("a short random source was not reported")
	}
}

func TestCheckRejectsGarbage(t *testing.T) {
	tok, err := New(rand.Reader, DefaultPrefix)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) string {
		b := []byte(tok)
		if b[i] == 'a' {
			b[i] = 'b'
		} else {
			b[i] = 'a'
		}
		return string(b)
	}
	bad := map[string]string{
		"empty":             "",
		"no prefix":         tok[len(DefaultPrefix):],
		"truncated":         tok[:len(tok)-1],
		"extended":          tok + "0",
		"body changed":      flip(len(DefaultPrefix) + 3),
		"checksum changed":  flip(len(tok) - 1),
		"non-base62 body":   tok[:10] + "!" + tok[11:],
		"bad prefix char":   "ph$" + tok[3:],
		"overlong prefix":   strings.Repeat("p", 33) + tok[len(DefaultPrefix):],
		"a real stripe key": "sk_live_51H8abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUV",
	}
	for name, s := range bad {
		if Check(s) == nil {
			t.Errorf("%s: Check accepted %q", name, s)
		}
	}
}

func TestAccessor(t *testing.T) {
	a, err := NewAccessor(rand.Reader)
	if err != nil || !strings.HasPrefix(a, "pha_") || len(a) != 26 {
		t.Fatalf("accessor %q, %v", a, err)
	}
	if Check(a) == nil {
		t.Fatal("an accessor passes as a token")
	}
	if shard, ok := AccessorShard(a); !ok || shard != a[4:6] {
		t.Fatalf("shard of %q: %q %v", a, shard, ok)
	}
	for _, bad := range []string{"", "pha_", "pha_a", "phx_abcdef", "pha_ab/cd", "pha_a.b"} {
		if shard, ok := AccessorShard(bad); ok {
			t.Errorf("shard of %q: %q", bad, shard)
		}
	}
}

func BenchmarkCheck(b *testing.B) {
	tok, err := New(rand.Reader, DefaultPrefix)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if Check(tok) != nil {
			b.Fatal("rejected")
		}
	}
}

func TestFindAndRedact(t *testing.T) {
	tok, err := New(rand.Reader, "phm_")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{tok, "/bot" + tok + "/getMe", "/v1/" + tok + ".json", "a=1&access_token=" + tok + "&b=2"} {
		b, e, ok := Find(s)
		if !ok || !strings.Contains(s[b:e], tok) {
			t.Fatalf("Find(%q) = %d, %d, %v", s, b, e, ok)
		}
		if r := Redact(s); strings.Contains(r, tok[len(tok)-20:]) || !strings.Contains(r, "[phantom token]") {
			t.Fatalf("Redact(%q) = %q", s, r)
		}
	}
	tampered := tok[:len(tok)-1] + map[bool]string{true: "0", false: "1"}[tok[len(tok)-1] != '0']
	for _, s := range []string{"", "/v1/customers/cus_123", strings.Repeat("a", 200), tampered} {
		if _, _, ok := Find(s); ok {
			t.Fatalf("Find(%q) found a token", s)
		}
	}
}
