package scrub

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
)

// The scrubber masks every occurrence of a secret's forms with '*' of the
// same length, so Content-Length stays true.
const maskByte = '*'

// A Wire is a string that carries the credential as the proxy sends it upstream
// (the credential itself, "Bearer <key>", a query-escaped value, basic auth's base64...).
type Wire struct {
	Value string
	// EncodingsOnly: only Value's byte encodings (hex, base64 middles, dumps, UTF-16/32) are
	// matched, not its text (basic auth's base64: an upstream may hex-dump the request it got).
	EncodingsOnly bool
	// MaxLen bounds len(Value) from the credential's length alone (0 means len(Value)), so that
	// how much a body holds back never depends on the credential's bytes.
	MaxLen int
}

// maxLen is the bound on len(w.Value) that the hold is computed from.
func (w Wire) maxLen() int { return max(w.MaxLen, len(w.Value)) }

// A Scrubber masks a credential and the wires that carry it, in every form
// an upstream may echo them in. It is safe for concurrent use.
type Scrubber struct {
	forms    []secretForm
	patterns []pattern // one per form
	sets     [][]alt   // alternatives of the non-alphanumeric characters in the forms
	index    []*altIndex
	filter   filter
	short    []shortPattern // patterns the filter cannot anchor
	// dependents[b] are the patterns looked for only around occurrences of
	// pattern b (secretForm.dependent); nil when there are none.
	dependents [][]int
	maxLen     int // longest possible occurrence of any pattern
	// hold is how many bytes a body holds back at the end of a read that
	// does not end in '\n': at least maxLen-1, and computed from lengths
	// only, never from which bytes the credential has.
	hold int
	// nlSafe: no form can contain '\n', so a read that ends in '\n' cannot
	// end inside one.
	nlSafe bool
	// minLen is the length of the shortest form: a shorter header name
	// cannot hold one.
	minLen int
	// names matches header names: every form in lower case, as a name is
	// read in lower case (canonicalisation changes its case). Built for the
	// first name long enough to hold a form.
	names     *Scrubber
	namesOnce sync.Once
}

// New returns the scrubber of credential as the proxy sends it in wires.
func New(credential string, wires ...Wire) *Scrubber {
	s := &Scrubber{nlSafe: true}
	s.compile(formsOf(credential, wires))
	s.minLen = len(credential)
	for _, f := range s.forms {
		s.minLen = min(s.minLen, len(f.text))
	}
	s.hold = max(holdFor(credential, wires), s.maxLen-1, 0)
	return s
}

// holdFor bounds the longest occurrence of any form, less one, from the
// lengths of the credential and the wires alone: a character is written in
// at most maxAltPerByte bytes per byte; a base64 middle of n bytes has at
// most 4n/3+1 characters, and one more on each side is masked. So the tail
// a body holds back tells nothing of the credential's bytes.
func holdFor(credential string, wires []Wire) int {
	// The credential's UTF-16 is at most twice its UTF-8.
	text, encoded := len(credential), 2*len(credential)
	for _, w := range wires {
		encoded = max(encoded, w.maxLen())
		if !w.EncodingsOnly {
			text = max(text, w.maxLen())
		}
	}
	b64 := maxAltPerByte*(4*encoded/3+1) + 2*maxAltPerByte
	return max(maxAltPerByte*text, b64) - 1
}

// mask overwrites b[from:to] with maskByte.
func mask(b []byte, from, to int) {
	for i := from; i < to; i++ {
		b[i] = maskByte
	}
}

// String returns v with every form masked.
func (s *Scrubber) String(v string) string {
	var buf [4]span
	spans := find(s, v, buf[:0])
	if len(spans) == 0 {
		return v
	}
	b := []byte(v)
	for _, sp := range spans {
		mask(b, sp.start, sp.end)
	}
	return string(b)
}

// LogText makes an error's text fit for the log. Go's errors quote what an
// upstream sent with %q, which rewrites the bytes (a NUL as \x00, every
// backslash doubled), so a quoted part is read back and withheld whole if
// it holds a form; what remains is masked as any text.
func (s *Scrubber) LogText(msg string) string {
	var b strings.Builder
	for i := 0; i < len(msg); {
		if c := msg[i]; c == '"' || c == '`' {
			if q, err := strconv.QuotedPrefix(msg[i:]); err == nil {
				i += len(q)
				if raw, _ := strconv.Unquote(q); s.String(raw) != raw || s.String(q) != q {
					q = `"(withheld)"`
				}
				b.WriteString(q)
				continue
			}
		}
		b.WriteByte(msg[i])
		i++
	}
	return s.String(b.String())
}

// Header masks the forms in every header value, and drops any header whose
// name holds a form in any case (a name cannot be masked: it would no
// longer be a valid header name).
func (s *Scrubber) Header(h http.Header) {
	for name, values := range h {
		if s.nameHolds(name) {
			delete(h, name)
			continue
		}
		for i, v := range values {
			values[i] = s.headerValue(v)
		}
	}
}

// nameHolds reports whether a header name holds a form of the credential,
// in any case: the hex of the key is a valid header name, and so is the
// key itself.
func (s *Scrubber) nameHolds(name string) bool {
	if len(name) < s.minLen || len(s.forms) == 0 {
		return false
	}
	s.namesOnce.Do(func() {
		lower := make([]secretForm, len(s.forms))
		for i, f := range s.forms {
			lower[i] = f
			lower[i].text = strings.ToLower(f.text)
		}
		s.names = &Scrubber{nlSafe: true}
		s.names.compile(lower)
	})
	name = strings.ToLower(name)
	return s.names.String(name) != name
}

// headerValue masks the forms in a header value. A value the upstream
// folded over several lines comes joined with a space where it was cut, so
// a form cut by a fold is looked for with the spaces taken out, and the
// whole value masked if one is there.
func (s *Scrubber) headerValue(v string) string {
	out := s.String(v)
	if strings.Contains(v, " ") {
		if joined := strings.ReplaceAll(v, " ", ""); s.String(joined) != joined {
			return strings.Repeat(string(maskByte), len(v))
		}
	}
	return out
}
