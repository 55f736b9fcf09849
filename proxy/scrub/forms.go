package scrub

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
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
	// The credential in UTF-16LE, hex-dumped or base64-encoded: .NET's
	// Convert.ToBase64String(Encoding.Unicode.GetBytes(...)), PowerShell's
	// -EncodedCommand.
	var le16 []byte
	for _, u := range utf16.Encode([]rune(credential)) {
		le16 = binary.LittleEndian.AppendUint16(le16, u)
	}
	h := hex.EncodeToString(le16)
	forms = append(forms, secretForm{text: h, kind: formText}, secretForm{text: strings.ToUpper(h), kind: formText})
	for _, m := range base64Middles(string(le16)) {
		forms = append(forms, secretForm{text: m, kind: formBase64})
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
