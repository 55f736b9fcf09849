package scrub

import (
	"fmt"
	"strings"
)

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
