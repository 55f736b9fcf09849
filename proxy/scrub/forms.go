package scrub

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// A secretForm is a string the scrubber looks for, and how encoders may
// have rewritten it.
type secretForm struct {
	text string
	kind formKind
	// dependent: every occurrence holds an occurrence of another form, so
	// it is looked for only around those (find).
	dependent bool
}

type formKind uint8

const (
	// formText: each character other than an ASCII letter or digit may
	// appear in any of the ways the encoders below write it (alternatives).
	formText formKind = iota
	// formBase64: base64 characters that depend on the secret's bytes only.
	// The one character on each side that mixes secret bits with the bytes
	// around it is masked too, whatever it is.
	formBase64
	// formExact: every byte as it is (dumps whose separators no encoder
	// rewrites in practice); alternatives would make them unanchorable.
	formExact
)

// formsOf lists the strings an upstream might echo the credential as. Text
// forms are matched with every character other than a letter or digit
// written in any way a mainstream encoder writes it (alts.go), so one form
// stands for its JSON, percent, form and HTML encodings. Base64 forms are
// the characters that only the secret's bytes determine, at each of the
// three alignments the secret can have inside a larger encoded document, in
// both alphabets.
//
// Text forms are the credential and the wires not EncodingsOnly. Hex, dump,
// UTF-16/32 and base64 forms are made of the credential and every wire (an
// upstream that base64-encodes or hex-dumps the request it received).
//
// Forms of a wire that holds the credential as it is ("Bearer <key>") are
// dependent: every occurrence of one holds an occurrence of a form of the
// credential (a byte-wise encoding holds the credential's encoding, a base64
// one one of the credential's middles), so they are looked for only around
// what the credential's forms found. Near-misses of the key then cost one
// check, not one per string holding it.
func formsOf(credential string, wires []Wire) []secretForm {
	forms := []secretForm{{text: credential, kind: formText}}
	type source struct {
		s         string
		dependent bool
	}
	encoded := []source{{credential, false}}
	for _, w := range wires {
		dep := strings.Contains(w.Value, credential)
		encoded = append(encoded, source{w.Value, dep})
		if !w.EncodingsOnly {
			forms = append(forms, secretForm{text: w.Value, kind: formText, dependent: dep})
		}
	}
	for _, src := range encoded {
		var derived []secretForm
		h := hex.EncodeToString([]byte(src.s))
		derived = append(derived, secretForm{text: h, kind: formText}, secretForm{text: strings.ToUpper(h), kind: formText})
		derived = append(derived, byteListForms(src.s)...)
		derived = append(derived, unicodeForms(src.s)...)
		for _, m := range base64Middles(src.s) {
			derived = append(derived, secretForm{text: m, kind: formBase64})
		}
		for _, f := range derived {
			f.dependent = src.dependent
			forms = append(forms, f)
		}
	}
	return forms
}

// minBase64Middle is the shortest base64 middle worth matching: 8
// characters, 48 bits of the secret. Keys of 7 bytes or more have middles at
// least that long at every alignment; shorter keys get no base64 forms.
const minBase64Middle = 8

// base64Middles returns, for each alignment of s inside a larger document
// (s starting at byte 0, 1 or 2 of a 3-byte group) and each alphabet
// (standard, URL), the run of base64 characters whose 6 bits all come from
// s. Padding never falls inside that run, so padded and unpadded encoders
// give the same middles.
func base64Middles(s string) []string {
	var out []string
	for align := range 3 {
		doc := make([]byte, align+len(s))
		copy(doc[align:], s)
		first := (8*align + 5) / 6       // first character whose bits start at or after s
		last := 8 * (align + len(s)) / 6 // characters before this one end at or before s's end
		if last-first < minBase64Middle {
			continue
		}
		for _, enc := range []*base64.Encoding{base64.RawStdEncoding, base64.RawURLEncoding} {
			m := enc.EncodeToString(doc)[first:last]
			if !contains(out, m) {
				out = append(out, m)
			}
		}
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

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
//     zero-padded up to 5 decimal or 4 hex digits.
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
	for width := len(dec); width <= 5; width++ {
		alts = append(alts, alt{s: "&#" + strings.Repeat("0", width-len(dec)) + dec + ";"})
	}
	for width := len(hx); width <= 4; width++ {
		alts = append(alts, folded("&#x", strings.Repeat("0", width-len(hx))+hx, ";"))
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
	return alts
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

// A dump writes s byte by byte: each byte in a digit format, with a
// separator between bytes (or between groups of bytes).
type dump struct {
	byteFormat string // fmt verb for one byte
	sep        string
	group      int  // bytes per group (0: 1); groups are what sep divides
	bothCases  bool // hex dumps come in upper and lower case
}

// dumps are the ways programs and tools print bytes, each matched exactly:
//   - hex with a one-character separator: Python's bytes.hex(sep), Go's
//     "% x", Node's <Buffer 73 6b ...>, .NET's BitConverter.ToString
//     ("73-6B-..."), colons as openssl and MAC addresses, and the other
//     punctuation a separator is commonly given (not a line break: a
//     form holding '\n' would hold back every stream at its line ends);
//   - hex in groups of 2 and 4 bytes (xxd, Python's bytes.hex(' ', 2)), at
//     each alignment of s in the dump;
//   - prefixed hex: Go's %#v of a []byte and C arrays ("0x73, 0x6b"),
//     escapes ("\x73\x6b"), every byte percent-encoded ("%73%6B");
//   - decimal: Go's %v ("[115 107 ...]"), Java's Arrays.toString, Rust's
//     {:?} and Python's list() (", "), JSON arrays of a Buffer (",").
//
// C# serializes a byte[] to JSON as base64, which base64Middles covers.
var dumps = func() []dump {
	var d []dump
	for _, sep := range []string{" ", ":", "-", ".", ",", "_", "|", "/", "\\", ";", "\t"} {
		d = append(d, dump{byteFormat: "%02x", sep: sep, bothCases: true})
	}
	for _, group := range []int{2, 4} {
		d = append(d, dump{byteFormat: "%02x", sep: " ", group: group, bothCases: true})
	}
	for _, sep := range []string{", ", ",", " "} {
		d = append(d, dump{byteFormat: "0x%02x", sep: sep, bothCases: true})
	}
	d = append(d, dump{byteFormat: "\\x%02x", bothCases: true}, dump{byteFormat: "%%%02x", bothCases: true})
	for _, sep := range []string{", ", ",", " "} {
		d = append(d, dump{byteFormat: "%d", sep: sep})
	}
	return d
}()

// byteListForms are s in every dump: exact forms, since separators are not
// rewritten by encoders in practice and alternatives would leave them
// nothing to anchor on. A grouped dump is given at every alignment of s in
// its groups; the partial groups at either end are left out, so the form
// is what every occurrence of s in such a dump holds.
func byteListForms(s string) []secretForm {
	var forms []secretForm
	for _, d := range dumps {
		bytesOf := make([]string, len(s))
		for i := range len(s) {
			bytesOf[i] = fmt.Sprintf(d.byteFormat, s[i])
		}
		var texts []string
		if d.group <= 1 {
			texts = []string{strings.Join(bytesOf, d.sep)}
		} else {
			for align := range d.group {
				// s starts align bytes into a group: a separator falls
				// before each byte at a multiple of group.
				var b strings.Builder
				for i := range len(s) {
					if i > 0 && (align+i)%d.group == 0 {
						b.WriteString(d.sep)
					}
					b.WriteString(bytesOf[i])
				}
				texts = append(texts, b.String())
			}
		}
		for _, t := range texts {
			forms = append(forms, secretForm{text: t, kind: formExact})
			if d.bothCases && strings.ToUpper(t) != t {
				forms = append(forms, secretForm{text: caseHex(t), kind: formExact})
			}
		}
	}
	return forms
}

// caseHex upper-cases the hex digits of a dump ("0x6B", "\\x6B", "%6B").
func caseHex(t string) string {
	b := []byte(t)
	for i, c := range b {
		if 'a' <= c && c <= 'f' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

// unicodeForms are s in UTF-16 and UTF-32, which an upstream may answer in
// when it is asked to (a charset in Accept) or chooses to. For ASCII, the
// big- and little-endian forms share all but one NUL at an end, so one form
// each covers both; other text gets both byte orders.
func unicodeForms(s string) []secretForm {
	units16 := utf16.Encode([]rune(s))
	var le16, be16, le32, be32 []byte
	ascii := true
	for _, u := range units16 {
		le16 = binary.LittleEndian.AppendUint16(le16, u)
		be16 = binary.BigEndian.AppendUint16(be16, u)
		ascii = ascii && u < utf8.RuneSelf
	}
	for _, r := range s {
		le32 = binary.LittleEndian.AppendUint32(le32, uint32(r))
		be32 = binary.BigEndian.AppendUint32(be32, uint32(r))
		ascii = ascii && r < utf8.RuneSelf
	}
	if ascii {
		return []secretForm{
			{text: string(le16[:len(le16)-1]), kind: formExact},
			{text: string(le32[:len(le32)-3]), kind: formExact},
		}
	}
	var forms []secretForm
	for _, b := range [][]byte{le16, be16, le32, be32} {
		forms = append(forms, secretForm{text: string(b), kind: formExact})
	}
	return forms
}
