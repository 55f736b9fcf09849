package proxy

import (
	"bytes"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

// chunks is a body that arrives in the given pieces.
type chunks struct{ parts []string }

func (c *chunks) Read(p []byte) (int, error) {
	if len(c.parts) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.parts[0])
	c.parts[0] = c.parts[0][n:]
	if c.parts[0] == "" {
		c.parts = c.parts[1:]
	}
	return n, nil
}

func (c *chunks) Close() error { return nil }

// scrubAll reads parts through the scrubber twice, as a body of unknown
// length (a big buffer) and of known length (a small one): both must agree.
func scrubAll(t *testing.T, s *scrubber, parts ...string) string {
	t.Helper()
	out, err := io.ReadAll(s.Reader(&chunks{parts: slices.Clone(parts)}, -1, nil))
	if err != nil {
		t.Fatal(err)
	}
	sized, err := io.ReadAll(s.Reader(&chunks{parts: parts}, int64(len(strings.Join(parts, ""))), nil))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, sized) {
		t.Fatalf("unknown length gave %q, known length %q", out, sized)
	}
	return string(out)
}

func TestScrubberEverySplitPoint(t *testing.T) {
	g := &Grant{Credential: realKey, AuthFormat: "Bearer {{credential}}"}
	s := newScrubber(g.secretForms())
	body := `{"error":"bad key ` + realKey + `", "again":"` + realKey + `"}`
	want := strings.ReplaceAll(body, realKey, strings.Repeat("*", len(realKey)))
	for i := 0; i <= len(body); i++ {
		for j := i; j <= len(body); j += 7 {
			got := scrubAll(t, s, body[:i], body[i:j], body[j:])
			if got != want {
				t.Fatalf("split at %d,%d: %q", i, j, got)
			}
		}
	}
}

func TestScrubberLeavesOtherBytesAlone(t *testing.T) {
	s := newScrubber((&Grant{Credential: realKey, AuthFormat: "{{credential}}"}).secretForms())
	// Prefixes of the key, and a stream that ends inside one, pass unchanged.
	body := "sk_live_ sk_live_51 " + realKey[:len(realKey)-1] + " data\n\n" + realKey[:10]
	if got := scrubAll(t, s, body[:15], body[15:]); got != body {
		t.Fatalf("changed: %q", got)
	}
	r := s.Reader(io.NopCloser(strings.NewReader(body)), int64(len(body)), nil)
	if err := iotest.TestReader(r, []byte(body)); err != nil {
		t.Fatal(err)
	}
}

func TestScrubberForms(t *testing.T) {
	key := `k3y/with+odd&chars<>"`
	g := &Grant{Credential: key, AuthFormat: "user:{{credential}}", AuthType: "basic"}
	s := newScrubber(g.secretForms())
	forms := g.secretForms()
	for _, form := range forms {
		in := "x" + form + "y"
		got := scrubAll(t, s, in)
		if len(got) != len(in) || !strings.HasPrefix(got, "x") || !strings.HasSuffix(got, "y") {
			t.Errorf("form %q came out as %q", form, got)
		}
		for _, f := range forms {
			if strings.Contains(got, f) {
				t.Errorf("form %q left %q in %q", form, f, got)
			}
		}
	}
}

func TestScrubberDoesNotHoldStreams(t *testing.T) {
	// A chunk that cannot start a secret is released at once.
	s := newScrubber([]string{realKey})
	pr, pw := io.Pipe()
	r := s.Reader(pr, -1, nil)
	go pw.Write([]byte("data: one\n\n"))
	buf := make([]byte, 64)
	n, err := r.Read(buf)
	if err != nil || string(buf[:n]) != "data: one\n\n" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	pw.Close()
	if n, err := r.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("after close: %d %v", n, err)
	}
}

func TestScrubHeaders(t *testing.T) {
	s := newScrubber([]string{realKey})
	h := map[string][]string{"Set-Cookie": {"k=" + realKey}, "X-Ok": {"fine"}}
	s.Header(h)
	if bytes.Contains([]byte(h["Set-Cookie"][0]), []byte(realKey)) || h["X-Ok"][0] != "fine" {
		t.Fatalf("headers %v", h)
	}
}

// BenchmarkScrub measures masking a 32 KiB body with every form of a key.
func BenchmarkScrub(b *testing.B) {
	s := newScrubber((&Grant{Credential: realKey, AuthFormat: "Bearer {{credential}}"}).secretForms())
	body := strings.Repeat(`{"id":"cus_123","name":"Ada Lovelace","email":"ada@example.com"},`, 500)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := io.Copy(io.Discard, s.Reader(io.NopCloser(strings.NewReader(body)), int64(len(body)), nil)); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkFindToken(b *testing.B) {
	f := newTokenFinder(nil, DefaultQueryParams)
	h := http.Header{"Authorization": {"Bearer " + mintToken(b)}, "Content-Type": {"application/json"}}
	for b.Loop() {
		if _, err := f.find(h, "limit=10"); err != nil {
			b.Fatal(err)
		}
	}
}
