package metering

import (
	"bytes"
	"slices"
)

// The usage scanners read the usage from the response bytes as they pass
// to the agent: nothing is buffered, no byte waits. A JSON body and every
// server-sent event's data go through a small JSON scanner that keeps the
// few containers on the way to the usage, a count of the nesting of
// anything else, and, when it meets the usage object at the place the API
// puts it, that object's bytes (bounded): so usage at the end of a large
// body, or after JSON nested a million levels deep, costs no more memory
// than usage at the start, and text the model or the agent wrote (inside
// strings, or anywhere else in the document) is never taken for usage.

// jsonUsageScanner reads a JSON document byte by byte and hands the usage
// objects at the format's target paths to count, in the order they come
// (of two at one place, the last read counts, as JSON decoders keep the
// last of a duplicate key).
//
// It follows only the containers on the way to a target: the document's
// object (or the array of them), and an object under a key that a target
// path goes through (response, message). Every other value, however deep
// (a tools schema the Responses API echoes, Anthropic's tool_use.input,
// Gemini's functionCall.args, all written by the agent or the model), is
// skipped by counting its nesting, with nothing kept of it: a skipped value
// costs no memory, whatever its depth, and nothing in it is ever taken for
// usage. There is no depth at which the scanner gives up. Bytes that are not
// JSON where it follows the document make it stop looking until reset (and
// count as malformed).
type jsonUsageScanner struct {
	format  string
	targets [][]string
	count   *Usage

	open  [maxOpen]scanLevel // the followed containers, outermost first
	nOpen int
	// inner counts the containers open inside the value being skipped or
	// captured; 0 while the scanner follows the document.
	inner    int
	inString bool
	escape   bool
	strIsKey bool // the string is a key of a followed object
	key      [maxKeyLen]byte
	nKey     int // the key's length so far; beyond maxKeyLen it names no target
	broken   bool

	capturing bool
	capPath   []string // the target the usage object sits at
	capBuf    []byte
}

// maxOpen bounds the containers followed: a top-level array, the document's
// object and the objects of the longest target path before its usage.
const maxOpen = 4

// maxKeyLen is longer than every key a target path names.
const maxKeyLen = 16

// scanLevel is one followed container.
type scanLevel struct {
	object     bool
	afterColon bool   // in an object, a value comes next
	key        string // in an object, the key being valued, if a target path names it
}

func newJSONUsageScanner(format string, count *Usage) *jsonUsageScanner {
	return &jsonUsageScanner{format: format, targets: usageTargets[format], count: count}
}

// reset readies the scanner for another document (the next SSE event).
func (s *jsonUsageScanner) reset() {
	s.nOpen, s.inner, s.nKey = 0, 0, 0
	s.inString, s.escape, s.strIsKey, s.broken, s.capturing = false, false, false, false, false
	s.capBuf = s.capBuf[:0]
}

// interestingKey returns the key just read if some target path names it,
// else "".
func (s *jsonUsageScanner) interestingKey() string {
	if s.nKey > maxKeyLen {
		return ""
	}
	switch string(s.key[:s.nKey]) {
	case "usage":
		return "usage"
	case "response":
		return "response"
	case "message":
		return "message"
	case "usageMetadata":
		return "usageMetadata"
	}
	return ""
}

// fail stops the scanner until reset: what it follows is not JSON.
func (s *jsonUsageScanner) fail() {
	s.broken = true
	s.count.Malformed = true
}

// enter handles a '{' or '[' while the scanner follows the document: it
// follows the container, captures it (a usage object at a target path), or
// skips it.
func (s *jsonUsageScanner) enter(c byte) {
	n := s.nOpen
	follow := false
	var target []string
	switch {
	case n == 0:
		follow = true // the document
	case s.open[n-1].object:
		l := s.open[n-1]
		if !l.afterColon {
			s.fail() // a container where a key belongs
			return
		}
		if c == '{' && l.key != "" {
			target, follow = s.match()
		}
	default:
		follow = c == '{' && n == 1 // an object in the top-level array
	}
	switch {
	case target != nil:
		s.capturing, s.capPath, s.inner = true, target, 1
		s.capBuf = append(s.capBuf[:0], '{')
	case follow && n < maxOpen:
		s.open[n] = scanLevel{object: c == '{'}
		s.nOpen++
	default:
		s.inner = 1 // not on the way to a target: skipped
	}
}

// match compares the keys of the followed objects (the innermost's being
// valued now) with the targets: it returns the target they name, or
// whether they lead to one.
func (s *jsonUsageScanner) match() (target []string, prefix bool) {
	var path [maxOpen]string
	k := 0
	for _, l := range s.open[:s.nOpen] {
		if l.object {
			if l.key == "" {
				return nil, false
			}
			path[k] = l.key
			k++
		}
	}
	for _, t := range s.targets {
		switch {
		case len(t) == k && slices.Equal(t, path[:k]):
			return t, false
		case len(t) > k && slices.Equal(t[:k], path[:k]):
			prefix = true
		}
	}
	return nil, prefix
}

// The bytes that end a run the scanner jumps over: in a string, and in a
// skipped or captured value outside strings.
var (
	stopInString = [256]bool{'"': true, '\\': true}
	stopSkipped  = [256]bool{'"': true, '{': true, '}': true, '[': true, ']': true}
)

func (s *jsonUsageScanner) write(b []byte) {
	if s.broken {
		return
	}
	for i := 0; i < len(b); i++ {
		// Most of a response is text inside strings, and values skipped:
		// jump to the next byte that can end a string, or that opens or
		// closes something in a skipped value.
		if s.inString && !s.escape && !s.strIsKey || !s.inString && s.inner > 0 {
			stop := &stopInString
			if !s.inString {
				stop = &stopSkipped
			}
			j := i
			for j < len(b) && !stop[b[j]] {
				j++
			}
			s.capture(b[i:j])
			if i = j; i == len(b) {
				return
			}
		}
		c := b[i]
		s.capture(b[i : i+1])
		if s.inString {
			switch {
			case s.escape:
				s.escape = false
				s.keyByte(c)
			case c == '\\':
				s.escape = true
				s.keyByte(c)
			case c == '"':
				s.inString = false
				if s.strIsKey {
					s.open[s.nOpen-1].key = s.interestingKey()
				}
			default:
				s.keyByte(c)
			}
			continue
		}
		if s.inner > 0 {
			// Inside a skipped or captured value: only its nesting counts.
			switch c {
			case '"':
				s.inString, s.strIsKey = true, false
			case '{', '[':
				s.inner++
			case '}', ']':
				if s.inner--; s.inner == 0 && s.capturing {
					s.capturing = false
					if len(s.capBuf) <= maxUsageObject {
						s.count.observe(s.format, s.capPath, s.capBuf)
					} else {
						s.count.Malformed = true
					}
				}
			}
			continue
		}
		switch c {
		case '"':
			n := s.nOpen
			s.inString = true
			s.strIsKey = n > 0 && s.open[n-1].object && !s.open[n-1].afterColon
			s.nKey = 0
		case '{', '[':
			s.enter(c)
		case '}', ']':
			n := s.nOpen
			if n == 0 || s.open[n-1].object != (c == '}') {
				s.fail()
				return
			}
			s.nOpen--
		case ':':
			if n := s.nOpen; n > 0 {
				s.open[n-1].afterColon = true
			}
		case ',':
			if n := s.nOpen; n > 0 && s.open[n-1].object {
				s.open[n-1].afterColon, s.open[n-1].key = false, ""
			}
		}
	}
}

// end notes a body that ended with the document unfinished: truncated.
func (s *jsonUsageScanner) end() {
	if !s.broken && (s.nOpen > 0 || s.inner > 0 || s.inString) {
		s.count.Malformed = true
	}
}

// capture keeps p as part of the usage object being read, up to the bound
// (one byte past it marks it too long).
func (s *jsonUsageScanner) capture(p []byte) {
	if s.capturing && len(s.capBuf) <= maxUsageObject {
		s.capBuf = append(s.capBuf, p[:min(len(p), maxUsageObject+1-len(s.capBuf))]...)
	}
}

// keyByte keeps a byte of a key being read; a key longer than any target
// name is only counted, and matches none.
func (s *jsonUsageScanner) keyByte(c byte) {
	if !s.strIsKey {
		return
	}
	if s.nKey < maxKeyLen {
		s.key[s.nKey] = c
	}
	if s.nKey <= maxKeyLen {
		s.nKey++
	}
}

// sseUsageScanner feeds the data of each server-sent event to a JSON
// scanner: lines starting "data:" (one optional space after), reset at
// every new data line, since each event of these APIs is one JSON document
// on one line. Other lines (event:, id:, comments) are skipped.
type sseUsageScanner struct {
	json      *jsonUsageScanner
	lineStart bool
	prefix    [5]byte // the start of the current line, until it says what it is
	nPrefix   int
	inData    bool // in a data line's value
	skipSpace bool // right after "data:"
}

func newSSEUsageScanner(format string, count *Usage) *sseUsageScanner {
	return &sseUsageScanner{json: newJSONUsageScanner(format, count), lineStart: true}
}

// end notes a stream that ended inside an event's unfinished document.
func (s *sseUsageScanner) end() { s.json.end() }

func (s *sseUsageScanner) write(b []byte) {
	for len(b) > 0 {
		if s.inData {
			if s.skipSpace {
				s.skipSpace = false
				if b[0] == ' ' {
					b = b[1:]
					continue
				}
			}
			i := bytes.IndexAny(b, "\r\n")
			if i < 0 {
				s.json.write(b)
				return
			}
			s.json.write(b[:i])
			s.inData, s.lineStart, s.nPrefix = false, true, 0
			b = b[i+1:]
			continue
		}
		if !s.lineStart {
			// Another field's line: skip to its end.
			i := bytes.IndexAny(b, "\r\n")
			if i < 0 {
				return
			}
			b = b[i:]
		}
		c := b[0]
		b = b[1:]
		if c == '\n' || c == '\r' {
			s.lineStart, s.nPrefix = true, 0
			continue
		}
		s.prefix[s.nPrefix] = c
		s.nPrefix++
		if string(s.prefix[:s.nPrefix]) != "data:"[:s.nPrefix] {
			s.lineStart = false // another field: skip the line
			continue
		}
		if s.nPrefix == len("data:") {
			s.inData, s.skipSpace, s.lineStart = true, true, false
			s.json.reset()
		}
	}
}
