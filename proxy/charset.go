package proxy

import (
	"errors"
	"net/http"
	"slices"
	"strings"
)

// The scrubber reads text whose ASCII characters are single bytes of the
// same value. An upstream that answers in UTF-16, UTF-32, UTF-7 or EBCDIC
// writes an echoed key in other bytes, so the agent must not be able to ask
// for such a charset, and such an answer is not passed on.

var errResponseCharset = errors.New("the upstream answered in a charset the scrubber cannot read")

// asciiCompatible are the charsets, by the names and prefixes of their IANA
// and WHATWG labels, that write every ASCII character as its own byte.
var asciiCompatible = []string{
	"utf-8", "utf8", "us-ascii", "ascii", "iso-8859-", "iso8859-", "iso_8859-", "latin", "l1",
	"windows-125", "cp125", "x-cp125", "koi8-", "macintosh", "x-mac-", "shift_jis", "sjis",
	"windows-31j", "euc-jp", "euc-kr", "gb2312", "gbk", "gb18030", "big5", "tis-620", "windows-874",
}

// readableResponseCharset reports whether every charset a response
// declares is one the scrubber reads. Every Content-Type value counts.
func readableResponseCharset(h http.Header) bool {
	for _, v := range h.Values("Content-Type") {
		for _, cs := range declaredCharsets(v) {
			if !slices.ContainsFunc(asciiCompatible, func(p string) bool { return strings.HasPrefix(cs, p) }) {
				return false
			}
		}
	}
	return true
}

// readableCharsets are the charsets in which the body guard
// (body_override.go) reads names as they are written: UTF-8 and its
// ASCII-compatible subsets (body-parser decodes any utf-*, UTF-7 included,
// before reading fields).
var readableCharsets = []string{"utf-8", "utf8", "us-ascii", "ascii", "iso-8859-1", "latin1"}

// readableBodyCharset reports whether every charset a request's
// Content-Type declares is one the body guard reads (readableCharsets).
func readableBodyCharset(contentType string) bool {
	for _, cs := range declaredCharsets(contentType) {
		if !slices.Contains(readableCharsets, cs) {
			return false
		}
	}
	return true
}

// declaredCharsets returns, in lower case, what follows every "charset" in
// a media type, wherever it stands (parsers differ on quotes and on where
// a parameter name begins, so each place one could read counts); "" for
// one with no value, which no list holds.
func declaredCharsets(v string) []string {
	var out []string
	v = strings.ToLower(v)
	for {
		i := strings.Index(v, "charset")
		if i < 0 {
			return out
		}
		v = strings.TrimLeft(v[i+len("charset"):], " \t")
		value := ""
		if rest, ok := strings.CutPrefix(v, "="); ok {
			value = strings.TrimLeft(rest, "\"' \t")
			if j := strings.IndexAny(value, "\"'; ,\t"); j >= 0 {
				value = value[:j]
			}
		}
		out = append(out, value)
	}
}

// stripCharsets removes every charset parameter from the media types of
// Accept, and of Content-Type when the request has no body: an upstream
// (ASP.NET Core among others) answers in the charset either names. A
// request body in another charset is refused before (checkBodyShape).
func stripCharsets(h http.Header, bodiless bool) {
	names := []string{"Accept"}
	if bodiless {
		names = append(names, "Content-Type")
	}
	for _, name := range names {
		values := h.Values(name)
		if len(values) == 0 {
			continue
		}
		kept := make([]string, 0, len(values))
		for _, v := range values {
			if v = withoutCharset(v); v != "" {
				kept = append(kept, v)
			}
		}
		h.Del(name)
		for _, v := range kept {
			h.Add(name, v)
		}
	}
}

// withoutCharset rewrites a list of media types without any parameter that
// mentions a charset, however spelt or quoted: parsers differ on quotes
// and on where a parameter name ends, so what could be read as one goes.
func withoutCharset(v string) string {
	var types []string
	for _, mt := range splitOutsideQuotes(v, ',') {
		var kept []string
		for i, p := range splitOutsideQuotes(mt, ';') {
			p = strings.TrimSpace(p)
			if i > 0 && (p == "" || strings.Contains(strings.ToLower(p), "charset")) {
				continue
			}
			kept = append(kept, p)
		}
		if len(kept) > 0 && kept[0] != "" {
			types = append(types, strings.Join(kept, "; "))
		}
	}
	return strings.Join(types, ", ")
}

// splitOutsideQuotes splits s at each sep that is not inside a quoted
// string (where a backslash escapes the next byte).
func splitOutsideQuotes(s string, sep byte) []string {
	var parts []string
	quoted, start := false, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case !quoted && c == sep:
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}
