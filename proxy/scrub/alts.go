package scrub

import (
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// An alt is one way to write a character. Bytes flagged in fold match in
// either case (hex digits, the x of "&#x"); s holds them in lower case.
type alt struct {
	s    string
	fold uint32
}

// maxAltPerByte bounds how many bytes an alternative spends per byte of the
// character it writes: 18, for "&DiacriticalGrave;" standing for '`' (most
// are 6 or less: "\u002b", "&#043;"; non-ASCII characters need at most 3
// per byte).
const maxAltPerByte = 18

// asciiAlts[c] lists the ways the encoders write the ASCII byte c, when c
// is not a letter or digit (letters and digits are written as they are by
// every encoder, and have no entry):
//   - raw;
//   - percent-encoding (url.QueryEscape, url.PathEscape, encodeURIComponent,
//     urlencode, URLEncoder, HttpUtility.UrlEncode): %XX in either case, and
//     %25XX, percent-encoded twice (a URL in the query of a redirect);
//   - form encoding: '+' for a space;
//   - JSON (encoding/json, PHP json_encode, .NET System.Text.Json, Python,
//     Jackson, Gson): \u00XX in either case, and the short escapes \" \\ \/
//     \b \f \n \r \t;
//   - HTML and XML (html.EscapeString, htmlspecialchars, .NET HtmlEncode,
//     the entities and he npm packages, PHP htmlentities with ENT_HTML5):
//     every HTML5 named reference of the character (&amp; &sol; &plus;
//     &lowbar; &period; ...), and numeric references in decimal and hex,
//     zero-padded up to 7 decimal or 6 hex digits;
//   - JavaScript, C, Python and PHP string escapes (OWASP ESAPI
//     encodeForJavaScript, AntiXSS): \xXX, \u{XX}, %uXXXX (escape()), a
//     three-digit octal \OOO, and a backslash before the character itself
//     (Python re.escape, shell quoting);
//   - CSS escapes (ESAPI encodeForCSS): \XX and the space that ends it, also
//     zero-padded to six digits.
var asciiAlts = func() (t [utf8.RuneSelf][]alt) {
	for c := range utf8.RuneSelf {
		if !isAlnum(byte(c)) {
			t[c] = asciiAlternatives(byte(c))
		}
	}
	return t
}()

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

var jsonShortEscapes = map[byte]string{'"': `\"`, '\\': `\\`, '/': `\/`, '\b': `\b`, '\f': `\f`, '\n': `\n`, '\r': `\r`, '\t': `\t`}

// htmlNamed lists the HTML5 named character references of ASCII
// punctuation (https://html.spec.whatwg.org/multipage/named-characters.html),
// each as it must be written: names are case-sensitive.
var htmlNamed = map[byte][]string{
	'\t': {"&Tab;"}, '\n': {"&NewLine;"},
	'!': {"&excl;"}, '"': {"&quot;", "&QUOT;"}, '#': {"&num;"}, '$': {"&dollar;"},
	'%': {"&percnt;"}, '&': {"&amp;", "&AMP;"}, '\'': {"&apos;"}, '(': {"&lpar;"},
	')': {"&rpar;"}, '*': {"&ast;", "&midast;"}, '+': {"&plus;"}, ',': {"&comma;"},
	'.': {"&period;"}, '/': {"&sol;"}, ':': {"&colon;"}, ';': {"&semi;"},
	'<': {"&lt;", "&LT;"}, '=': {"&equals;"}, '>': {"&gt;", "&GT;"}, '?': {"&quest;"},
	'@': {"&commat;"}, '[': {"&lsqb;", "&lbrack;"}, '\\': {"&bsol;"},
	']': {"&rsqb;", "&rbrack;"}, '^': {"&Hat;"}, '_': {"&lowbar;", "&UnderBar;"},
	'`': {"&grave;", "&DiacriticalGrave;"}, '{': {"&lcub;", "&lbrace;"},
	'|': {"&verbar;", "&vert;", "&VerticalLine;"}, '}': {"&rcub;", "&rbrace;"},
}

func asciiAlternatives(c byte) []alt {
	hx := strconv.FormatUint(uint64(c), 16)
	hx2 := strings.Repeat("0", 2-len(hx)) + hx
	dec := strconv.Itoa(int(c))
	alts := []alt{
		{s: string(c)},
		folded("%", hx2, ""),
		folded("%25", hx2, ""),
		folded(`\u00`, hx2, ""),
	}
	for width := len(dec); width <= 7; width++ {
		alts = append(alts, alt{s: "&#" + strings.Repeat("0", width-len(dec)) + dec + ";"})
	}
	for width := len(hx); width <= 6; width++ {
		alts = append(alts, folded("&#x", strings.Repeat("0", width-len(hx))+hx, ";"))
	}
	hx6 := strings.Repeat("0", 6-len(hx)) + hx
	oct := strconv.FormatUint(uint64(c), 8)
	alts = append(alts,
		folded(`\x`, hx2, ""),
		folded(`\u{`, hx, "}"),
		folded("%u00", hx2, ""),
		folded(`\`, hx, " "),
		folded(`\`, hx6, " "),
	)
	if c != 0 { // its octal \000 would begin its CSS \000000
		alts = append(alts, alt{s: `\` + strings.Repeat("0", 3-len(oct)) + oct})
	}
	if c != '\\' {
		alts = append(alts, alt{s: `\` + string(c)})
	}
	if c == ' ' {
		alts = append(alts, alt{s: "+"})
	}
	if e, ok := jsonShortEscapes[c]; ok {
		alts = append(alts, alt{s: e})
	}
	for _, name := range htmlNamed[c] {
		alts = append(alts, alt{s: name})
	}
	var unique []alt
	for _, a := range alts {
		if !slices.Contains(unique, a) {
			unique = append(unique, a)
		}
	}
	return unique
}

// runeAlts lists the ways the encoders write a non-ASCII character, given
// as its UTF-8 bytes (or one byte that is not valid UTF-8).
func runeAlts(raw string) []alt {
	var pct, pct2 strings.Builder
	var fold, fold2 uint32
	for i := range len(raw) {
		h := strconv.FormatUint(uint64(raw[i]), 16)
		h = strings.Repeat("0", 2-len(h)) + h
		pct.WriteString("%" + h)
		fold |= 0b110 << (3 * i)
		pct2.WriteString("%25" + h)
		fold2 |= 0b11000 << (5 * i)
	}
	alts := []alt{{s: raw}, {s: pct.String(), fold: fold}, {s: pct2.String(), fold: fold2}}
	r, size := utf8.DecodeRuneInString(raw)
	if r == utf8.RuneError && size <= 1 {
		return alts // not UTF-8: encoders cannot name the character
	}
	var json string
	if r > 0xffff {
		hi, lo := (r-0x10000)>>10+0xd800, (r-0x10000)&0x3ff+0xdc00
		json = `\u` + strconv.FormatInt(int64(hi), 16) + `\u` + strconv.FormatInt(int64(lo), 16)
	} else {
		h := strconv.FormatInt(int64(r), 16)
		json = `\u` + strings.Repeat("0", 4-len(h)) + h
	}
	jfold := uint32(0b111100)
	if len(json) == 12 {
		jfold |= 0b111100 << 6
	}
	return append(alts,
		alt{s: json, fold: jfold},
		alt{s: "&#" + strconv.Itoa(int(r)) + ";"},
		folded("&#x", strconv.FormatInt(int64(r), 16), ";"),
	)
}

// folded is prefix+digits+suffix with the digits, and an "x" ending the
// prefix, matched in either case.
func folded(prefix, digits, suffix string) alt {
	var fold uint32
	for i := range len(digits) {
		fold |= 1 << (len(prefix) + i)
	}
	if strings.HasSuffix(prefix, "x") {
		fold |= 1 << (len(prefix) - 1)
	}
	return alt{s: prefix + digits + suffix, fold: fold}
}

// lower maps ASCII upper-case letters to lower case and every other byte
// to itself.
var lower = func() (t [256]byte) {
	for i := range t {
		t[i] = byte(i)
		if 'A' <= i && i <= 'Z' {
			t[i] = byte(i) + 'a' - 'A'
		}
	}
	return t
}()

// altIndex tells, for each byte, which of a set's alternatives (by bit)
// begin with it and which end with it, so that extending a match tries
// only those that can fit.
type altIndex struct{ first, last [256]uint64 }

func newAltIndex(alts []alt) *altIndex {
	if len(alts) > 64 {
		panic("scrub: a character has more than 64 alternatives")
	}
	x := &altIndex{}
	for i, a := range alts {
		bit := uint64(1) << i
		n := len(a.s)
		for _, c := range caseVariants(a.s[0], a.fold&1 != 0) {
			x.first[c] |= bit
		}
		for _, c := range caseVariants(a.s[n-1], a.fold&(1<<(n-1)) != 0) {
			x.last[c] |= bit
		}
	}
	return x
}

func caseVariants(c byte, fold bool) []byte {
	if fold && 'a' <= c && c <= 'z' {
		return []byte{c, c - 'a' + 'A'}
	}
	return []byte{c}
}

// asciiIndex indexes asciiAlts, once for every scrubber.
var asciiIndex = func() (t [utf8.RuneSelf]*altIndex) {
	for c, alts := range asciiAlts {
		if alts != nil {
			t[c] = newAltIndex(alts)
		}
	}
	return t
}()

func altAt[T text](a alt, t T, p int) bool {
	if p+len(a.s) > len(t) {
		return false
	}
	for i := range len(a.s) {
		c := t[p+i]
		if a.fold&(1<<i) != 0 {
			c = lower[c]
		}
		if c != a.s[i] {
			return false
		}
	}
	return true
}
