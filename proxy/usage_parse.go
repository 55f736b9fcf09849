package proxy

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/phantomvault/phantom/internal/resolve"
)

// Reading the usage an LLM upstream reports, from the response bytes as
// they pass to the agent: nothing is buffered, no byte waits. A JSON body
// and every server-sent event's data go through a small JSON scanner that
// keeps the few containers on the way to the usage, a count of the nesting
// of anything else, and, when it meets the usage object at the place the
// API puts it, that object's bytes (bounded): so usage at the end of a
// large body, or after JSON nested a million levels deep, costs no more
// memory than usage at the start, and text the model or the agent wrote
// (inside strings, or anywhere else in the document) is never taken for
// usage.
//
// Where each API reports usage (input, output):
//   - OpenAI chat completions and completions: usage.prompt_tokens and
//     usage.completion_tokens, in the body or in a stream's last chunk (with
//     stream_options.include_usage); Responses: usage.input_tokens and
//     usage.output_tokens, in the body or in the response.completed event's
//     response.usage. Cached and reasoning tokens are already inside these.
//   - Anthropic messages: usage.input_tokens + cache_creation_input_tokens +
//     cache_read_input_tokens (all of them are input the model read), and
//     usage.output_tokens; a stream gives input in message_start's
//     message.usage and the running output total in each message_delta's
//     usage: the last one is the total.
//   - Gemini: usageMetadata.promptTokenCount + toolUsePromptTokenCount, and
//     candidatesTokenCount + thoughtsTokenCount; every chunk of a stream
//     carries running totals: the last one counts.
//
// Usage counts only when the body was read to its end (usage_settle.go): a
// stream cut short carries running totals, not what the request spent.

// maxUsageObject bounds the bytes of one usage object the scanner keeps.
const maxUsageObject = 4 << 10

// usageTargets are the key paths (object keys from the document's object)
// where each format puts its usage object. The document may also be an
// array of such objects (Gemini's streamGenerateContent without alt=sse);
// no other array is looked into.
var usageTargets = map[string][][]string{
	resolve.UsageOpenAI:    {{"usage"}, {"response", "usage"}},
	resolve.UsageAnthropic: {{"usage"}, {"message", "usage"}},
	resolve.UsageGemini:    {{"usageMetadata"}},
}

// usageCount is what a response reported, as read so far.
type usageCount struct {
	input, output int64
	haveInput     bool
	complete      bool // the final totals were read
	// malformed: the scanner met bytes that are not JSON where it followed
	// the document, or a usage object it could not read (not JSON, or over
	// maxUsageObject). Only says why usage is missing, when it is.
	malformed bool
}

// observe folds one usage object found at target path into u.
func (u *usageCount) observe(format string, path []string, raw []byte) {
	var f struct {
		PromptTokens     *int64 `json:"prompt_tokens"`
		CompletionTokens *int64 `json:"completion_tokens"`
		InputTokens      *int64 `json:"input_tokens"`
		OutputTokens     *int64 `json:"output_tokens"`
		CacheCreation    *int64 `json:"cache_creation_input_tokens"`
		CacheRead        *int64 `json:"cache_read_input_tokens"`
		PromptCount      *int64 `json:"promptTokenCount"`
		ToolPromptCount  *int64 `json:"toolUsePromptTokenCount"`
		CandidatesCount  *int64 `json:"candidatesTokenCount"`
		ThoughtsCount    *int64 `json:"thoughtsTokenCount"`
	}
	if json.Unmarshal(raw, &f) != nil {
		u.malformed = true
		return
	}
	v := func(p *int64) int64 {
		if p == nil || *p < 0 {
			return 0
		}
		return *p
	}
	switch format {
	case resolve.UsageOpenAI:
		in := f.PromptTokens
		if in == nil {
			in = f.InputTokens
		}
		if in == nil {
			return
		}
		out := f.CompletionTokens
		if out == nil {
			out = f.OutputTokens // Responses; embeddings report no output
		}
		u.input, u.output, u.haveInput, u.complete = v(in), v(out), true, true
	case resolve.UsageAnthropic:
		if f.InputTokens != nil {
			u.input, u.haveInput = v(f.InputTokens)+v(f.CacheCreation)+v(f.CacheRead), true
		}
		if f.OutputTokens != nil {
			u.output = v(f.OutputTokens)
		}
		// message_start's usage (message.usage) opens a stream; the top-level
		// usage of a message_delta or of a whole message has the final output.
		if len(path) == 1 && f.OutputTokens != nil && u.haveInput {
			u.complete = true
		}
	case resolve.UsageGemini:
		if f.PromptCount == nil {
			return
		}
		u.input = v(f.PromptCount) + v(f.ToolPromptCount)
		u.output = v(f.CandidatesCount) + v(f.ThoughtsCount)
		u.haveInput, u.complete = true, true
	}
}

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
	count   *usageCount

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

func newJSONUsageScanner(format string, count *usageCount) *jsonUsageScanner {
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
	s.count.malformed = true
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
						s.count.malformed = true
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
		s.count.malformed = true
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

func newSSEUsageScanner(format string, count *usageCount) *sseUsageScanner {
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

// Bounds of reading a metered response on after its agent has gone: long
// enough for any stream an LLM API sends, short of holding a connection to
// the upstream (and a handler) forever.
const (
	maxDrainTime  = 10 * time.Minute
	maxDrainBytes = 256 << 20
)

// usageTap reads a response body for the agent and, on the side, the usage
// in it. ReverseProxy closes the body at its end, or when writing to the
// agent fails (and then panics with http.ErrAbortHandler, after the close):
// a body closed before its end is read on to its end, through the scanner,
// so that the usage the upstream reports last is still charged. done
// receives what was read, once, before Close returns.
type usageTap struct {
	body  io.ReadCloser
	scan  func([]byte)
	end   func() // the body ended: the scanner notes a truncated document
	count usageCount
	ended bool // read to its end
	cut   bool // a read failed: the upstream (or the drain's bound) cut it
	stop  func()
	once  sync.Once
	done  func(u usageCount, ended bool)
}

// newUsageTap reads body for usage in format; stop cancels the upstream
// request, to bound the drain.
func newUsageTap(body io.ReadCloser, format string, sse bool, stop func(), done func(usageCount, bool)) *usageTap {
	t := &usageTap{body: body, stop: stop, done: done}
	if sse {
		sc := newSSEUsageScanner(format, &t.count)
		t.scan, t.end = sc.write, sc.end
	} else {
		sc := newJSONUsageScanner(format, &t.count)
		t.scan, t.end = sc.write, sc.end
	}
	return t
}

func (t *usageTap) Read(p []byte) (int, error) {
	n, err := t.body.Read(p)
	t.scan(p[:n])
	switch {
	case err == io.EOF:
		t.ended = true
		t.end()
	case err != nil:
		t.cut = true
	}
	return n, err
}

func (t *usageTap) Close() error {
	t.once.Do(func() {
		if !t.ended && !t.cut {
			t.drain()
		}
		t.done(t.count, t.ended)
	})
	return t.body.Close()
}

// drain reads the rest of the body into the scanner only, within
// maxDrainBytes and maxDrainTime.
func (t *usageTap) drain() {
	if t.stop != nil {
		timer := time.AfterFunc(maxDrainTime, t.stop)
		defer timer.Stop()
	}
	buf := make([]byte, 32<<10)
	for left := int64(maxDrainBytes); left > 0; {
		n, err := t.body.Read(buf[:min(int64(len(buf)), left)])
		t.scan(buf[:n])
		left -= int64(n)
		switch {
		case err == io.EOF:
			t.ended = true
			t.end()
			return
		case err != nil:
			t.cut = true
			return
		}
	}
}

// meterUsage wraps a 2xx response's body so that its usage is read as it
// passes, and read on to its end if the agent goes away; ex.read gets what
// was read, for settle.
func (s *Server) meterUsage(resp *http.Response, ex *exchange) io.ReadCloser {
	sse := strings.HasPrefix(strings.ToLower(strings.TrimSpace(resp.Header.Get("Content-Type"))), "text/event-stream")
	ex.read = &readUsage{}
	return newUsageTap(resp.Body, ex.meter.format, sse, ex.stopUpstream, func(u usageCount, ended bool) {
		ex.read.count, ex.read.ended, ex.read.done = u, ended, true
	})
}
