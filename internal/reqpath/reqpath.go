// Package reqpath decides which request paths are unambiguous enough to match
// against an allow-list. The engine and the proxy use the same rule, so the
// path that is checked is byte for byte the path that is forwarded.
package reqpath

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Validate refuses paths that an upstream might decode or
// normalise into something other than what we match: dot segments, empty
// segments, encoded separators, dots, NUL or percent signs, backslashes,
// parameters, fragments, queries, and bytes outside printable ASCII.
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
