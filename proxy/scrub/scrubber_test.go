package scrub

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"regexp"
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

// encoder writes a document the way a real encoder does; each is
// character by character, so the secret's bytes land in
// enc(doc[:i+n])[len(enc(doc[:i])):].
type encoder struct {
	name string
	enc  func(string) string
}

// textEncoders are the mainstream text encoders. Go's own are used where Go
// has them; the others are the documented transformations below.
var textEncoders = []encoder{
	{"raw", func(s string) string { return s }},
	{"encoding/json", func(s string) string { return jsonString(s, true) }},
	{"encoding/json, SetEscapeHTML(false)", func(s string) string { return jsonString(s, false) }},
	{"PHP json_encode", phpJSON},
	{".NET System.Text.Json", func(s string) string { return dotnetJSON(s, "%04X") }},
	{"Gson (lower-case \\u escapes)", func(s string) string { return dotnetJSON(s, "%04x") }},
	{"url.QueryEscape", url.QueryEscape},
	{"url.PathEscape", url.PathEscape},
	{"percent, lower-case hex", func(s string) string { return lowerHex(url.QueryEscape(s)) }},
	{"form (url.Values)", func(s string) string { return strings.TrimPrefix(url.Values{"q": {s}}.Encode(), "q=") }},
	{"form, lower-case hex", func(s string) string { return lowerHex(strings.TrimPrefix(url.Values{"q": {s}}.Encode(), "q=")) }},
	{"html.EscapeString", html.EscapeString},
	{"hex", func(s string) string { return hex.EncodeToString([]byte(s)) }},
	{"HEX", func(s string) string { return strings.ToUpper(hex.EncodeToString([]byte(s))) }},
}

var base64Encoders = []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding}

var base64Names = []string{"std", "raw std", "url", "raw url"}

func jsonString(s string, escapeHTML bool) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(escapeHTML)
	enc.Encode(s)
	out := strings.TrimSuffix(b.String(), "\n")
	return out[1 : len(out)-1]
}

// phpJSON is PHP's json_encode with default flags: '/' as "\/", every
// non-ASCII character as a lower-case \uXXXX (surrogate pairs beyond the
// BMP), '"' and '\' as \" and \\, control characters escaped.
func phpJSON(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '/':
			b.WriteString(`\/`)
		case r == '"' || r == '\\':
			b.WriteString(`\` + string(r))
		case r < 0x20 || r >= 0x7f:
			writeUTF16Escapes(&b, r, "%04x")
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// dotnetJSON is System.Text.Json with JavaScriptEncoder.Default: the
// HTML-sensitive characters + < > & ' " ` and every non-ASCII character as
// \uXXXX in upper-case hex ("%04X"); Gson writes the same set in lower
// case ("%04x"). '\' is "\\".
func dotnetJSON(s, hexFormat string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\\':
			b.WriteString(`\\`)
		case strings.ContainsRune(`+<>&'"`+"`", r) || r < 0x20 || r >= 0x7f:
			writeUTF16Escapes(&b, r, hexFormat)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func writeUTF16Escapes(b *strings.Builder, r rune, hexFormat string) {
	if r > 0xffff {
		r -= 0x10000
		fmt.Fprintf(b, `\u`+hexFormat+`\u`+hexFormat, 0xd800+(r>>10), 0xdc00+(r&0x3ff))
		return
	}
	fmt.Fprintf(b, `\u`+hexFormat, r)
}

var percentHex = regexp.MustCompile(`%[0-9A-F]{2}`)

func lowerHex(s string) string { return percentHex.ReplaceAllStringFunc(s, strings.ToLower) }

// checkMasked fails unless every byte of out[from:to] is masked.
func checkMasked(t testing.TB, what, out string, from, to int) {
	t.Helper()
	if got := out[from:to]; got != strings.Repeat("*", to-from) {
		t.Fatalf("%s: the secret came out as %q in %q", what, got, out)
	}
}

// checkDocument wraps secret in prefix and suffix, encodes the document with
// every encoder (base64 with the secret at each of the three alignments),
// splits it at the given points and checks that every byte (every base64
// character) that carries a bit of the secret comes out masked, and that
// the streaming output is what a brute-force search would mask.
func checkDocument(t testing.TB, s *Scrubber, prefix, secret, suffix string, cuts []int) {
	t.Helper()
	for _, e := range textEncoders {
		doc := e.enc(prefix + secret + suffix)
		from, to := len(e.enc(prefix)), len(e.enc(prefix+secret))
		if !strings.HasPrefix(doc, e.enc(prefix+secret)) || !strings.HasPrefix(doc, e.enc(prefix)) {
			continue // the encoder joined a character across the boundary
		}
		out := scrubAndCompare(t, s, doc, cuts)
		checkMasked(t, e.name, out, from, to)
	}
	for align := range 3 {
		pre := prefix[:len(prefix)-len(prefix)%3] + strings.Repeat("x", align)
		for i, enc := range base64Encoders {
			doc := enc.EncodeToString([]byte(pre + secret + suffix))
			out := scrubAndCompare(t, s, doc, cuts)
			// Characters holding any bit of the secret's bytes.
			from, to := 8*len(pre)/6, (8*(len(pre)+len(secret))+5)/6
			checkMasked(t, fmt.Sprintf("base64 %s, alignment %d", base64Names[i], align), out, from, to)
		}
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

// TestScrubberEncoders: for keys with '/' and '+', echoed raw and as the
// injected value inside a document, by every encoder and at every base64
// alignment, nothing of the key comes out.
func TestScrubberEncoders(t *testing.T) {
	for _, key := range []string{awsKey, azureKey, realKey, `k3y/with+odd&chars<>"'` + "`~.-_ é€😀"} {
		for _, g := range []grant{
			{key: key, typ: "bearer", format: "Bearer {{credential}}"},
			{key: key, typ: "header", format: "Token {{credential}}"},
			{key: key, typ: "basic", format: "{{credential}}:"},
			{key: key, typ: "query", format: "{{credential}}"},
		} {
			s := g.scrubber()
			embedded := []string{key, g.value()}
			switch g.typ {
			case "query":
				embedded = append(embedded, url.QueryEscape(g.value()))
			case "basic":
				embedded = append(embedded, strings.TrimRight(base64.StdEncoding.EncodeToString([]byte(g.value())), "="))
			}
			for _, secret := range embedded {
				t.Run(fmt.Sprintf("%s/%s/%.12s", g.typ, key[:6], secret), func(t *testing.T) {
					prefix := "GET /v1/x HTTP/1.1\r\nHost: api\r\nAuthorization: "
					checkDocument(t, s, prefix, secret, "\r\nAccept: */*\r\n", []int{17, 40, 41, 90, 91, 92, 300})
				})
			}
		}
	}
}

// TestScrubberMixedEscapes: an encoder may escape one character and not
// another, or write hex digits in either case: each character is matched on
// its own.
func TestScrubberMixedEscapes(t *testing.T) {
	s := grant{key: "ab/cd+ef/gh+ij kl", format: "{{credential}}"}.scrubber()
	for _, v := range []string{
		`ab\/cd\u002Bef/gh%2bij+kl`,
		`ab%2Fcd+ef\u002fgh&#43;ij&#x20;kl`,
		`ab&#047;cd&#X2B;ef%2fgh\u002bij%20kl`,
	} {
		if got := scrubAll(t, s, "<"+v[:7], v[7:]+">"); got != "<"+strings.Repeat("*", len(v))+">" {
			t.Errorf("%s came out as %s", v, got)
		}
	}
}

// TestScrubberBase64Edges: the characters on each side of a base64 middle
// mix 2 or 4 bits of the key with its neighbours; they are masked too, raw
// or escaped.
func TestScrubberBase64Edges(t *testing.T) {
	s := grant{key: awsKey, format: "{{credential}}"}.scrubber()
	doc := base64.StdEncoding.EncodeToString([]byte("x" + awsKey + "yz"))
	from, to := 8/6, (8*(1+len(awsKey))+5)/6
	out := scrubAll(t, s, doc)
	checkMasked(t, "raw", out, from, to)
	if out[:from] != doc[:from] || out[to:] != doc[to:] {
		t.Fatalf("masked more than the key's characters: %q of %q", out, doc)
	}
	esc := dotnetJSON(doc, "%04X")
	out = scrubAll(t, s, esc)
	checkMasked(t, ".NET", out, len(dotnetJSON(doc[:from], "%04X")), len(dotnetJSON(doc[:to], "%04X")))
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

func TestBase64Middles(t *testing.T) {
	// Every middle is a substring of the encoding of the key at its
	// alignment, in a document of random neighbours.
	for n := 1; n < 40; n++ {
		key := strings.Repeat("\xa5Z/", n)[:n]
		middles := base64Middles(key)
		if n >= 7 && len(middles) < 3 || n < 6 && len(middles) > 0 {
			t.Fatalf("%d bytes: %d middles", n, len(middles))
		}
		for _, m := range middles {
			found := false
			for align := range 3 {
				for _, nb := range []string{"\x00\x00\x00", "\xff\xff\xff"} {
					for _, enc := range base64Encoders {
						if strings.Contains(enc.EncodeToString([]byte(nb[:align]+key+nb)), m) {
							found = true
						}
					}
				}
			}
			if !found || len(m) < minBase64Middle {
				t.Fatalf("%d bytes: middle %q", n, m)
			}
		}
	}
}

func TestAlternativesArePrefixFreeExceptRaw(t *testing.T) {
	// Only a raw '%', '&' or '\' may be a prefix of another way to write the
	// same character; matchUnits tracks those ends as a set.
	for c, alts := range asciiAlts {
		for i, a := range alts {
			for j, b := range alts {
				if i != j && len(a.s) < len(b.s) && strings.HasPrefix(b.s, a.s) && !strings.ContainsRune(`%&\`, rune(c)) {
					t.Errorf("%q: %q is a prefix of %q", rune(c), a.s, b.s)
				}
			}
		}
	}
}
