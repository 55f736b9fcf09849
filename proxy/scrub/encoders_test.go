package scrub

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"unicode/utf16"
)

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
	{"JavaScript \\xXX (ESAPI encodeForJavaScript)", punctuationAs(`\x%02X`)},
	{"JavaScript \\u{xx}", punctuationAs(`\u{%x}`)},
	{"escape()'s %uXXXX", punctuationAs(`%%u%04X`)},
	{"octal \\OOO", punctuationAs(`\%03o`)},
	{"CSS \\XX (ESAPI encodeForCSS)", punctuationAs(`\%x `)},
	{"CSS \\XXXXXX", punctuationAs(`\%06X `)},
	{"backslash before punctuation (re.escape)", punctuationAs(`\%c`)},
	{"numeric references padded to 6 hex digits", punctuationAs(`&#x%06x;`)},
	{"numeric references padded to 7 digits", punctuationAs(`&#%07d;`)},
}

// punctuationAs writes every ASCII character but letters and digits with
// format (of the byte), and the rest as it is.
func punctuationAs(format string) func(string) string {
	return func(s string) string {
		var b strings.Builder
		for _, r := range s {
			if r < 0x80 && !isAlnum(byte(r)) && (r != 0 || !strings.HasPrefix(format, `\%03o`)) {
				fmt.Fprintf(&b, format, r)
				continue
			}
			b.WriteRune(r)
		}
		return b.String()
	}
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

// TestScrubberUTF16Encoded: the key in UTF-16LE, hex-dumped or
// base64-encoded inside a larger document (.NET's
// Convert.ToBase64String(Encoding.Unicode...), PowerShell's
// -EncodedCommand), comes out masked at every alignment.
func TestScrubberUTF16Encoded(t *testing.T) {
	s := grant{key: awsKey, format: "{{credential}}"}.scrubber()
	utf16le := func(s string) []byte {
		var b []byte
		for _, u := range utf16.Encode([]rune(s)) {
			b = binary.LittleEndian.AppendUint16(b, u)
		}
		return b
	}
	for pad := range 3 {
		prefix := "Authorization: " + strings.Repeat("x", pad)
		doc := utf16le(prefix + awsKey + "\r\n")
		pre := len(utf16le(prefix))
		h := hex.EncodeToString(doc)
		checkMasked(t, "hex of UTF-16LE", s.String(h), 2*pre, 2*(pre+2*len(awsKey)))
		for i, enc := range base64Encoders {
			b := enc.EncodeToString(doc)
			from, to := (8*pre+5)/6, 8*(pre+2*len(awsKey))/6
			checkMasked(t, "base64 of UTF-16LE, "+base64Names[i], s.String(b), from, to)
		}
	}
}
