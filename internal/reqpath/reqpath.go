// Package reqpath decides which request paths are unambiguous enough to match
// against an allow-list. The engine and the proxy use the same rule, so the
// path that is checked is byte for byte the path that is forwarded.
package reqpath

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// Validate refuses paths that an upstream might decode or
// normalise into something other than what we match: dot segments, empty
// segments, encoded separators, dots, NUL or percent signs, backslashes,
// parameters, fragments, queries, bytes outside printable ASCII, and encoded
// characters that Unicode compatibility normalisation turns into any of these.
func Validate(p string) error {
	if !strings.HasPrefix(p, "/") {
		return errors.New("must start with /")
	}
	decoded := make([]byte, 0, len(p))
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c <= ' ' || c >= 0x7f:
			return errors.New("contains a control, space or non-ASCII byte")
		case c == '\\' || c == ';' || c == '#' || c == '?':
			return fmt.Errorf("contains %q", c)
		case c == '%':
			if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
				return errors.New("contains a malformed percent-encoding")
			}
			d := unhex(p[i+1])<<4 | unhex(p[i+2])
			if d < 0x20 || d == 0x7f || strings.IndexByte(`/\.%;?#`, d) >= 0 {
				return fmt.Errorf("contains an encoded %q", d)
			}
			decoded = append(decoded, d)
			i += 2
		default:
			decoded = append(decoded, c)
		}
	}
	// Encoded bytes must form valid UTF-8: this refuses overlong forms
	// such as %C0%AE, which lenient decoders read as '.'.
	if !utf8.Valid(decoded) {
		return errors.New("contains percent-encoded bytes that are not valid UTF-8")
	}
	if err := checkCompatibilityForms(decoded); err != nil {
		return err
	}
	for seg := range strings.SplitSeq(p[1:], "/") {
		if seg == "." || seg == ".." {
			return errors.New("contains a dot segment")
		}
	}
	if strings.Contains(p, "//") {
		return errors.New("contains an empty segment (//)")
	}
	return nil
}

// structural are the bytes that decide how a path is read: separators, dots,
// escapes, parameters, queries and fragments.
const structural = "/\\.%;?#:"

// checkCompatibilityForms refuses encoded characters whose NFKC form holds a
// structural byte or a control: an upstream that normalises (full-width
// U+FF0E and U+FF0F, U+2025 TWO DOT LEADER, U+FE68 SMALL REVERSE SOLIDUS, ...)
// would read them as "..", "/" or "\", though they matched as one segment
// here. Letters and digits that normalise to other letters stay allowed: they
// cannot move a request out of an allow-list's segments.
func checkCompatibilityForms(decoded []byte) error {
	for i := 0; i < len(decoded); {
		if decoded[i] < utf8.RuneSelf {
			i++
			continue
		}
		r, size := utf8.DecodeRune(decoded[i:])
		if nf := norm.NFKC.String(string(r)); nf != string(r) && strings.IndexFunc(nf, isStructural) >= 0 {
			return fmt.Errorf("contains %U, which Unicode normalisation turns into %q", r, nf)
		}
		i += size
	}
	// Normalising the whole path can compose across characters: it must
	// leave the structure exactly as it is.
	if nf := norm.NFKC.Bytes(decoded); !sameStructure(decoded, nf) {
		return errors.New("contains characters that Unicode normalisation turns into separators, dots or controls")
	}
	return nil
}

func isStructural(r rune) bool {
	return r < ' ' || r == 0x7f || r < utf8.RuneSelf && strings.IndexByte(structural, byte(r)) >= 0
}

// sameStructure reports whether a and b hold the same structural bytes in
// the same order.
func sameStructure(a, b []byte) bool {
	next := func(s []byte) ([]byte, int) {
		for i, c := range s {
			if c < utf8.RuneSelf && isStructural(rune(c)) {
				return s[i+1:], int(c)
			}
		}
		return nil, -1
	}
	for {
		var ca, cb int
		a, ca = next(a)
		b, cb = next(b)
		if ca != cb {
			return false
		}
		if ca < 0 {
			return true
		}
	}
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	default:
		return c - 'a' + 10
	}
}
