package scrub

import (
	"encoding/base64"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
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

// scrubAll reads parts through the scrubber as a body of unknown length (read
// into the caller's buffer), of known length (a small buffer of its own) and
// one byte at a time: all three, and String on the whole, must agree.
func scrubAll(t testing.TB, s *Scrubber, parts ...string) string {
	t.Helper()
	whole := strings.Join(parts, "")
	out, err := io.ReadAll(s.Reader(&chunks{parts: slices.Clone(parts)}, -1, nil))
	if err != nil {
		t.Fatal(err)
	}
	sized, err := io.ReadAll(s.Reader(&chunks{parts: slices.Clone(parts)}, int64(len(whole)), nil))
	if err != nil {
		t.Fatal(err)
	}
	big := make([]byte, len(whole)+s.hold+minDirect+1)
	n, err := io.ReadFull(s.Reader(&chunks{parts: slices.Clone(parts)}, -1, nil), big)
	if err != io.ErrUnexpectedEOF && err != io.EOF && !(err == nil && n == len(big)) {
		t.Fatal(err)
	}
	direct := readAllDirect(t, s.Reader(&chunks{parts: slices.Clone(parts)}, -1, nil))
	oneByte, err := io.ReadAll(iotest.OneByteReader(s.Reader(io.NopCloser(iotest.HalfReader(strings.NewReader(whole))), -1, nil)))
	if err != nil {
		t.Fatal(err)
	}
	str := s.String(whole)
	for name, got := range map[string]string{"known length": string(sized), "direct": string(direct), "one byte at a time": string(oneByte), "String": str} {
		if got != string(out) {
			t.Fatalf("%s gave %q, unknown length %q", name, got, out)
		}
	}
	return string(out)
}

// readAllDirect reads with big buffers, as ReverseProxy does.
func readAllDirect(t testing.TB, r io.Reader) []byte {
	t.Helper()
	var out []byte
	buf := make([]byte, 32<<10)
	for {
		n, err := r.Read(buf)
		out = append(out, buf[:n]...)
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// reference masks what a brute-force search finds: every pattern tried at
// every position of the whole text. The filter and the streaming must find
// the same.
func reference(s *Scrubber, body string) string {
	b := []byte(body)
	for pi := range s.patterns {
		for p := range len(body) {
			for _, sp := range matchFrom(s, body, pi, p, nil) {
				mask(b, sp.start, sp.end)
			}
		}
	}
	return string(b)
}

// A grant is a key as a route injects it: typ and format as in a Grant of
// package proxy, whose wires method gives the same wires as this one.
type grant struct{ key, typ, format string }

// value is the key as the route sends it, before any encoding.
func (g grant) value() string { return strings.ReplaceAll(g.format, "{{credential}}", g.key) }

func (g grant) wires() []Wire {
	v := g.value()
	switch g.typ {
	case "query":
		return []Wire{{Value: v}, {Value: url.QueryEscape(v), MaxLen: 3 * len(v)}}
	case "basic":
		b64 := base64.RawStdEncoding.EncodeToString([]byte(v))
		return []Wire{{Value: v}, {Value: b64, EncodingsOnly: true, MaxLen: (len(v) + 2) / 3 * 4}}
	}
	return []Wire{{Value: v}}
}

func (g grant) scrubber() *Scrubber { return New(g.key, g.wires()...) }

// A Stripe-style key; an AWS-style secret key and an Azure-style storage
// key, with '/' and '+'.
const (
	realKey  = "sk_live_51REALkeyNeverLeaves0123456789abcdef"
	awsKey   = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
	azureKey = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

func TestScrubberEverySplitPoint(t *testing.T) {
	s := grant{key: realKey, format: "Bearer {{credential}}"}.scrubber()
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
	s := grant{key: realKey, format: "{{credential}}"}.scrubber()
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

// scrubAndCompare scrubs doc split at cuts (positions modulo its length)
// and checks it against reference.
func scrubAndCompare(t testing.TB, s *Scrubber, doc string, cuts []int) string {
	t.Helper()
	var parts []string
	last := 0
	for _, c := range cuts {
		c = min(max(c%(len(doc)+1), last), len(doc))
		parts = append(parts, doc[last:c])
		last = c
	}
	parts = append(parts, doc[last:])
	out := scrubAll(t, s, parts...)
	if want := reference(s, doc); out != want {
		t.Fatalf("streaming gave %q, brute force %q", out, want)
	}
	if len(out) != len(doc) {
		t.Fatalf("length %d became %d", len(doc), len(out))
	}
	return out
}

func TestScrubberHeaders(t *testing.T) {
	s := grant{key: awsKey, format: "{{credential}}"}.scrubber()
	cookie := "k=" + url.QueryEscape(awsKey)
	echo := base64.StdEncoding.EncodeToString([]byte("a:" + awsKey))
	h := http.Header{"Set-Cookie": {cookie}, "X-Echo": {echo}, "X-Ok": {"fine"}}
	s.Header(h)
	checkMasked(t, "Set-Cookie", h.Get("Set-Cookie"), 2, len(cookie))
	checkMasked(t, "X-Echo", h.Get("X-Echo"), 2, (8*(2+len(awsKey))+5)/6)
	if h.Get("X-Ok") != "fine" {
		t.Fatalf("headers %v", h)
	}
}

// TestScrubberHeaderNames: a name that holds a form of the key in any case
// (the key, its hex, its percent-encoding: all valid header names, and
// canonicalisation changes their case) is dropped, in requests' 1xx,
// trailers and headers alike; others stay.
func TestScrubberHeaderNames(t *testing.T) {
	const key = "sk-live-ATTACK0123456789abcdefSECRET"
	s := grant{key: key, typ: "bearer", format: "Bearer {{credential}}"}.scrubber()
	hexKey := hex.EncodeToString([]byte(key))
	for _, name := range []string{
		"X-" + key,
		"X-" + hexKey,
		"X-" + strings.ToUpper(hexKey),
		http.CanonicalHeaderKey("x-" + hexKey),
		"X-" + url.QueryEscape(awsKey),
	} {
		s := s
		if strings.Contains(name, "%") {
			s = grant{key: awsKey, format: "{{credential}}"}.scrubber()
		}
		h := http.Header{name: {"1"}, "X-Ok": {"fine"}}
		s.Header(h)
		if len(h) != 1 || h.Get("X-Ok") != "fine" {
			t.Errorf("name %q: headers after scrubbing %v", name, h)
		}
	}
}

// TestScrubberFoldedHeaderValue: a value the upstream folded in the middle
// of the key reaches the proxy joined with a space; it is masked whole.
func TestScrubberFoldedHeaderValue(t *testing.T) {
	const key = "sk-live-ATTACK0123456789abcdefSECRET"
	s := grant{key: key, format: "{{credential}}"}.scrubber()
	h := http.Header{"X-A": {"sk-live-ATTACK 0123456789abcdefSECRET"}, "X-B": {"two words"}}
	s.Header(h)
	if strings.Trim(h.Get("X-A"), "*") != "" || h.Get("X-B") != "two words" {
		t.Fatalf("headers after scrubbing %v", h)
	}
}

// TestScrubberMatchesReference: random keys from real alphabets in random
// documents, split at random points: the streaming scrubber masks exactly
// what a brute-force search finds.
func TestScrubberMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 300 {
		key := randomKey(rng, keyAlphabets[rng.IntN(len(keyAlphabets))], 8+rng.IntN(40))
		g := randomGrant(rng, key)
		s := g.scrubber()
		var doc strings.Builder
		for range 1 + rng.IntN(6) {
			doc.WriteString(randomKey(rng, "abcdef {}\":,\n/+=%\\", rng.IntN(40)))
			forms := formsOf(g.key, g.wires())
			f := forms[rng.IntN(len(forms))].text
			if rng.IntN(3) == 0 {
				f = f[:rng.IntN(len(f)+1)] // a prefix only
			}
			doc.WriteString(textEncoders[rng.IntN(len(textEncoders))].enc(f))
		}
		body := doc.String()
		cuts := []int{rng.IntN(len(body) + 1), rng.IntN(len(body) + 1), rng.IntN(len(body) + 1)}
		slices.Sort(cuts)
		scrubAndCompare(t, s, body, cuts)
	}
}

var keyAlphabets = []string{
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",   // base62
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", // base64
	"0123456789abcdef", // hex
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~",      // URL-safe with '.' '~'
	"abcdefghijklmnopqrstuvwxyz0123456789!#$%&'()*+,-./:;<=>?@[]^_`{|}~\"\\ ", // passwords
}

func randomKey(rng *rand.Rand, alphabet string, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[rng.IntN(len(alphabet))]
	}
	return string(b)
}

func randomGrant(rng *rand.Rand, key string) grant {
	styles := []grant{
		{typ: "bearer", format: "Bearer {{credential}}"},
		{typ: "header", format: "Token {{credential}}"},
		{typ: "header", format: "{{credential}}"},
		{typ: "basic", format: "{{credential}}:"},
		{typ: "basic", format: "user:{{credential}}"},
		{typ: "query", format: "{{credential}}"},
	}
	g := styles[rng.IntN(len(styles))]
	g.key = key
	return g
}

// TestScrubberHoldCoversEveryForm: the tail held back, computed from lengths
// alone, is never shorter than the longest occurrence of a form minus one
// (what correctness across reads needs), for any content of that length.
func TestScrubberHoldCoversEveryForm(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	worst := []string{strings.Repeat("+", 60), strings.Repeat("\u00e9", 30), strings.Repeat("😀", 15), strings.Repeat("%", 50), strings.Repeat("\xfb\xff", 30)}
	for i := range 500 {
		key := randomKey(rng, keyAlphabets[rng.IntN(len(keyAlphabets))], 1+rng.IntN(80))
		if i < len(worst) {
			key = worst[i]
		}
		g := randomGrant(rng, key)
		s := g.scrubber()
		if hold := holdFor(g.key, g.wires()); hold < s.maxLen-1 {
			t.Fatalf("key %q (%s %q): hold %d, longest form %d", key, g.typ, g.format, hold, s.maxLen)
		}
	}
}

// TestScrubberHoldsBackIndependentlyOfTheKey: a read ending in a correct
// guess of the key's first bytes is released exactly as far as one ending
// in a wrong guess; a read ending in '\n' is released whole.
func TestScrubberHoldsBackIndependentlyOfTheKey(t *testing.T) {
	g := grant{key: awsKey, typ: "bearer", format: "Bearer {{credential}}"}
	s := g.scrubber()
	firstRead := func(chunk string) int {
		pr, pw := io.Pipe()
		defer pw.Close()
		go pw.Write([]byte(chunk))
		buf := make([]byte, 64<<10)
		n, err := s.Reader(pr, -1, nil).Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	filler := strings.Repeat(`{"data":"some text"},`, 100)
	for k := 1; k < len(awsKey); k++ {
		right := firstRead(filler + awsKey[:k])
		wrong := firstRead(filler + strings.Repeat("Q", k))
		if right != wrong || right != len(filler)+k-s.hold {
			t.Fatalf("guess of %d bytes: released %d when right, %d when wrong (hold %d)", k, right, wrong, s.hold)
		}
	}
	if n := firstRead("data: " + awsKey[:10] + "\n"); n != len("data: "+awsKey[:10]+"\n") {
		t.Fatalf("a read ending in a newline was held back: %d", n)
	}
}

func TestScrubberDoesNotHoldStreams(t *testing.T) {
	s := grant{key: realKey, format: "{{credential}}"}.scrubber()
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

// TestScrubberShortKeys: keys too short for the filter (1 to 3 bytes) are
// still masked, by trying them at every byte.
func TestScrubberShortKeys(t *testing.T) {
	for _, key := range []string{"k", "k/", "a+b", "abcd"} {
		s := grant{key: key, format: "{{credential}}"}.scrubber()
		body := "x " + url.QueryEscape(key) + " y"
		if got := scrubAll(t, s, body); strings.Contains(got, url.QueryEscape(key)) || len(got) != len(body) {
			t.Errorf("key %q: %q", key, got)
		}
	}
}
