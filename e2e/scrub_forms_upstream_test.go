package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"unicode/utf16"

	"github.com/phantomvault/phantom/e2e/harness"
)

// Keys with '/' and '+' (and '=' padding): an AWS-style secret access key
// and an Azure-style storage account key (both the vendors' published
// examples).
const (
	awsStyleKey   = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
	azureStyleKey = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// echo is one place the upstream wrote the key: where, under which
// encoding, and which bytes of it carry bits of the key.
type echo struct {
	label    string
	header   string // "" for the body
	from, to int    // in the header value, or in the body
}

// formsAPI answers every request by echoing the credential it received in
// every form mainstream encoders write it: raw, JSON (Go with and without
// HTML escaping, PHP, .NET, Gson), percent (upper and lower case, query and
// path), form encoding, HTML, hex, and base64 of a dump of the request at
// each of the three alignments in both alphabets, padded or not; a few in
// headers too. It records what it sent, so the test can tell which bytes
// must come out masked.
type formsAPI struct {
	*harness.Upstream
	mu sync.Mutex
	// last response sent
	body    string
	headers http.Header
	echoes  []echo
}

func startFormsAPI(t *testing.T) *formsAPI {
	t.Helper()
	a := &formsAPI{}
	a.Upstream = harness.StartUpstream(t, http.HandlerFunc(a.serve))
	return a
}

// textEncoders write text character by character, so the key's bytes
// land in enc(prefix+key)[len(enc(prefix)):].
var textEncoders = []struct {
	name string
	enc  func(string) string
}{
	{"raw", func(s string) string { return s }},
	{"Go encoding/json", func(s string) string { return jsonEscaped(s, true) }},
	{"Go encoding/json without HTML escaping", func(s string) string { return jsonEscaped(s, false) }},
	// PHP json_encode: '/' as "\/".
	{"PHP json_encode", func(s string) string { return strings.ReplaceAll(jsonEscaped(s, false), "/", `\/`) }},
	// .NET System.Text.Json: + < > & ' " ` as \u00XX, upper-case hex.
	{".NET System.Text.Json", func(s string) string { return dotnetEscape(s, "%04X") }},
	// Gson: the same set in lower-case hex.
	{"Gson", func(s string) string { return dotnetEscape(s, "%04x") }},
	{"url.QueryEscape", url.QueryEscape},
	{"url.PathEscape", url.PathEscape},
	{"percent-encoding, lower-case hex", func(s string) string { return lowerPercent(url.QueryEscape(s)) }},
	{"form encoding", func(s string) string { return strings.TrimPrefix(url.Values{"k": {s}}.Encode(), "k=") }},
	{"form encoding, lower-case hex", func(s string) string {
		return lowerPercent(strings.TrimPrefix(url.Values{"k": {s}}.Encode(), "k="))
	}},
	{"html.EscapeString", html.EscapeString},
	// The entities and he npm packages (cheerio, htmlparser2), PHP
	// htmlentities with ENT_HTML5: HTML5 named references.
	{"HTML5 named references", html5Named},
	// Zero-padded numeric references, hex and decimal.
	{"zero-padded &#x00HH;", func(s string) string { return everyPunct(s, "&#x%04X;") }},
	{"zero-padded &#00DD;", func(s string) string { return everyPunct(s, "&#%04d;") }},
	{"over-padded &#x00000HH;", func(s string) string { return everyPunct(s, "&#x%06x;") }},
	// OWASP ESAPI encodeForJavaScript and encodeForCSS, escape(), Python
	// re.escape: what the attack on the refactored stack got through.
	{"JavaScript \\xHH", func(s string) string { return everyPunct(s, `\x%02X`) }},
	{"CSS \\HH ", func(s string) string { return everyPunct(s, `\%x `) }},
	{"escape() %u00HH", func(s string) string { return everyPunct(s, "%%u%04X") }},
	{"backslash before punctuation", func(s string) string { return everyPunct(s, `\%c`) }},
	{"hex", func(s string) string { return hex.EncodeToString([]byte(s)) }},
}

// byteDumps write a string byte by byte with separators.
var byteDumps = []struct {
	name string
	enc  func(string) string
}{
	{"Python bytes.hex(' ')", func(s string) string { return byteList(s, "%02x", " ") }},
	{"hex with colons, upper case", func(s string) string { return byteList(s, "%02X", ":") }},
	{"Node JSON of a Buffer", func(s string) string { return byteList(s, "%d", ",") }},
	{"decimal bytes with spaces", func(s string) string { return byteList(s, "%d", ", ") }},
	{".NET BitConverter.ToString", func(s string) string { return byteList(s, "%02X", "-") }},
	{"Python bytes.hex('|')", func(s string) string { return byteList(s, "%02x", "|") }},
	{"Go %v of a []byte", func(s string) string { return strings.Trim(fmt.Sprintf("%v", []byte(s)), "[]") }},
	{"Go %#v of a []byte", func(s string) string {
		return strings.TrimSuffix(strings.TrimPrefix(fmt.Sprintf("%#v", []byte(s)), "[]byte{"), "}")
	}},
	{"C array, upper case", func(s string) string { return byteList(s, "0x%02X", ",") }},
	{"xxd, groups of 2 bytes", func(s string) string { return grouped(hex.EncodeToString([]byte(s)), 4) }},
	{`Python escapes (\x..)`, func(s string) string { return byteList(s, `\x%02x`, "") }},
	{"every byte percent-encoded", func(s string) string { return byteList(s, "%%%02X", "") }},
	{"UTF-16LE", func(s string) string { return utf16Text(s, binary.LittleEndian)[:2*len(s)-1] }},
	{"UTF-16BE", func(s string) string { return utf16Text(s, binary.BigEndian)[1:] }},
	{"UTF-32LE", func(s string) string { return utf32Text(s, binary.LittleEndian)[:4*len(s)-3] }},
	{"UTF-32BE", func(s string) string { return utf32Text(s, binary.BigEndian)[3:] }},
}

// grouped writes h in groups of n characters separated by spaces.
func grouped(h string, n int) string {
	var b strings.Builder
	for i := 0; i < len(h); i += n {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(h[i:min(i+n, len(h))])
	}
	return b.String()
}

// utf16Text and utf32Text are an ASCII s in UTF-16 or UTF-32: the tests
// keep the bytes that carry bits of s (the NULs at one end carry none).
func utf16Text(s string, order binary.AppendByteOrder) string {
	var b []byte
	for _, u := range utf16.Encode([]rune(s)) {
		b = order.AppendUint16(b, u)
	}
	return string(b)
}

func utf32Text(s string, order binary.AppendByteOrder) string {
	var b []byte
	for _, r := range s {
		b = order.AppendUint32(b, uint32(r))
	}
	return string(b)
}

func byteList(s, format, sep string) string {
	parts := make([]string, len(s))
	for i := range len(s) {
		parts[i] = fmt.Sprintf(format, s[i])
	}
	return strings.Join(parts, sep)
}

// html5Names are the names the entities package writes for ASCII
// punctuation (per the HTML5 named character references).
var html5Names = map[rune]string{
	'!': "&excl;", '"': "&quot;", '#': "&num;", '$': "&dollar;", '%': "&percnt;", '&': "&amp;",
	'\'': "&apos;", '(': "&lpar;", ')': "&rpar;", '*': "&ast;", '+': "&plus;", ',': "&comma;",
	'.': "&period;", '/': "&sol;", ':': "&colon;", ';': "&semi;", '<': "&lt;", '=': "&equals;",
	'>': "&gt;", '?': "&quest;", '@': "&commat;", '[': "&lsqb;", '\\': "&bsol;", ']': "&rsqb;",
	'^': "&Hat;", '_': "&lowbar;", '`': "&grave;", '{': "&lcub;", '|': "&verbar;", '}': "&rcub;",
}

func html5Named(s string) string {
	var b strings.Builder
	for _, r := range s {
		if name, ok := html5Names[r]; ok {
			b.WriteString(name)
		} else {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// everyPunct writes every ASCII character other than a letter or digit with
// format.
func everyPunct(s, format string) string {
	var b strings.Builder
	for i := range len(s) {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c >= 0x80 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, format, c)
		}
	}
	return b.String()
}

var base64Encodings = []struct {
	name string
	enc  *base64.Encoding
}{
	{"std", base64.StdEncoding}, {"std unpadded", base64.RawStdEncoding},
	{"url", base64.URLEncoding}, {"url unpadded", base64.RawURLEncoding},
}

func jsonEscaped(s string, escapeHTML bool) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(escapeHTML)
	enc.Encode(s)
	out := strings.TrimSpace(b.String())
	return out[1 : len(out)-1]
}

func dotnetEscape(s, hexFormat string) string {
	var b strings.Builder
	for _, r := range jsonEscaped(s, false) {
		if strings.ContainsRune(`+<>&'`+"`", r) {
			fmt.Fprintf(&b, `\u`+hexFormat, r)
		} else {
			b.WriteRune(r)
		}
	}
	return b.String()
}

var percentEscape = regexp.MustCompile(`%[0-9A-F]{2}`)

func lowerPercent(s string) string { return percentEscape.ReplaceAllStringFunc(s, strings.ToLower) }
