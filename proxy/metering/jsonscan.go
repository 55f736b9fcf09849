package metering

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// A request body is read in place: scanObject keeps the few members the
// checks read as slices of the body, and edits insert bytes before an
// object's closing brace, so nothing of the body is decoded or re-encoded.

// object is a JSON object's members that a check reads, and where the
// object ends, as offsets into the whole body.
type object struct {
	members map[string]member
	closeAt int // offset of the closing '}'
	empty   bool
}

type member struct {
	raw        []byte // the value, as written
	start, end int    // its offsets in the body
}

// scanObject reads the JSON object b (which starts at offset base of the
// body) and keeps the members named in watched, as slices of b: it copies
// nothing. It refuses anything but one valid JSON object in valid UTF-8, a
// watched key twice, and a key equal to a watched one but for case
// (encoding/json matches keys so, with bytes.EqualFold).
func scanObject(b []byte, base int, watched []string) (*object, error) {
	if !utf8.Valid(b) {
		return nil, errors.New("not valid UTF-8")
	}
	if !json.Valid(b) {
		return nil, errors.New("not one valid JSON value")
	}
	i := skipSpace(b, 0)
	if b[i] != '{' {
		return nil, errors.New("not a JSON object")
	}
	o := &object{members: map[string]member{}, empty: true}
	i = skipSpace(b, i+1)
	for b[i] != '}' {
		o.empty = false
		keyEnd := skipString(b, i)
		key := b[i+1 : keyEnd-1]
		i = skipSpace(b, keyEnd) // ':'
		start := skipSpace(b, i+1)
		end := skipValue(b, start)
		if err := o.keep(key, watched, member{raw: b[start:end], start: base + start, end: base + end}); err != nil {
			return nil, err
		}
		i = skipSpace(b, end)
		if b[i] == ',' {
			i = skipSpace(b, i+1)
		}
	}
	o.closeAt = base + i
	return o, nil
}

// keep records m under the watched key that key (as written, quotes off)
// names, if any.
func (o *object) keep(key []byte, watched []string, m member) error {
	if bytes.IndexByte(key, '\\') >= 0 {
		// An escaped character is at most 12 bytes (a surrogate pair): a
		// longer key is longer than any watched one, folded or not.
		if len(key) > 256 {
			return nil
		}
		var s string
		if err := json.Unmarshal(quoted(key), &s); err != nil {
			return errors.New("not valid JSON")
		}
		key = []byte(s)
	}
	for _, w := range watched {
		// Folding only maps a rune to another of 1 to 3 bytes: a key more
		// than three times as long as w cannot fold to it.
		if len(key) > 3*len(w) || !bytes.EqualFold(key, []byte(w)) {
			continue
		}
		if string(key) != w {
			return fmt.Errorf("the key %q differs from %q only in case", key, w)
		}
		if _, dup := o.members[w]; dup {
			return fmt.Errorf("the key %q appears twice", w)
		}
		o.members[w] = m
		return nil
	}
	return nil
}

// quoted is key with its quotes, as it stands in the body.
func quoted(key []byte) []byte {
	q := make([]byte, 0, len(key)+2)
	q = append(q, '"')
	q = append(q, key...)
	return append(q, '"')
}

// intMember reads a non-negative integer member; ok is false when absent.
func intMember(o *object, key string) (n int64, ok bool, err error) {
	m, ok := o.members[key]
	if !ok {
		return 0, false, nil
	}
	if string(m.raw) == "null" {
		return 0, false, nil // absent, to the APIs
	}
	var perr error
	if len(m.raw) > 20 { // longer than any int64: refused before it is copied
		perr = strconv.ErrRange
	} else {
		n, perr = strconv.ParseInt(string(m.raw), 10, 64)
	}
	if perr != nil || n < 0 {
		return 0, false, fmt.Errorf("the request body's %s is not a non-negative integer", key)
	}
	return n, true, nil
}

// The skip functions walk JSON that json.Valid has accepted: each returns
// the offset just past what starts at i.

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString skips the string whose opening quote is at i.
func skipString(b []byte, i int) int {
	i++
	for {
		q := bytes.IndexByte(b[i:], '"')
		if q < 0 {
			return len(b) // unreachable for valid JSON
		}
		i += q
		slashes := 0
		for j := i - 1; b[j] == '\\'; j-- {
			slashes++
		}
		i++
		if slashes%2 == 0 {
			return i
		}
	}
}

// skipValue skips the value that starts at i.
func skipValue(b []byte, i int) int {
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	}
	for i < len(b) && !strings.ContainsRune(",}] \t\r\n", rune(b[i])) {
		i++
	}
	return i
}

// edit inserts text at an offset of the body.
type edit struct {
	at   int
	text string
}

// insert adds "key":value as the object's last member: only bytes are
// added before its closing brace, nothing of the body is re-encoded.
func (o *object) insert(key, value string) edit {
	text := strconv.Quote(key) + ":" + value
	if !o.empty {
		text = "," + text
	}
	return edit{at: o.closeAt, text: text}
}

// applyEdits returns raw with the edits made, nil when there are none. It
// makes them in raw's spare capacity when that holds them (copying nothing
// more than the bytes after each edit), so raw is not to be read after.
func applyEdits(raw []byte, edits []edit) []byte {
	if len(edits) == 0 {
		return nil
	}
	slices.SortStableFunc(edits, func(a, b edit) int { return a.at - b.at }) // inserts at one offset keep their order
	n := len(raw)
	for _, e := range edits {
		n += len(e.text)
	}
	if n <= cap(raw) {
		out := raw[:n]
		end := n // the edits from the last: each moves what follows it
		for k := len(edits) - 1; k >= 0; k-- {
			e := edits[k]
			tail := len(raw) - e.at
			if k < len(edits)-1 {
				tail = edits[k+1].at - e.at
			}
			copy(out[end-tail:end], raw[e.at:e.at+tail])
			end -= tail
			copy(out[end-len(e.text):end], e.text)
			end -= len(e.text)
		}
		return out
	}
	out := make([]byte, 0, n)
	prev := 0
	for _, e := range edits {
		out = append(out, raw[prev:e.at]...)
		out = append(out, e.text...)
		prev = e.at
	}
	return append(out, raw[prev:]...)
}
