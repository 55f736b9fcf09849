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
// keeps nothing but its nesting and, when it meets the usage object at the
// place the API puts it, that object's bytes (bounded): so usage at the end
// of a large body costs no more memory than usage at the start, and text
// the model wrote (inside strings, or deeper in the document) is never
// taken for usage.
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

// usageTargets are the key paths (object keys from the top, arrays not
// counted) where each format puts its usage object.
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

// jsonUsageScanner follows the nesting of a JSON document byte by byte and
// hands the usage objects at the format's target paths to count. Bytes
// that are not JSON make it stop looking until reset.
type jsonUsageScanner struct {
	format  string
	targets [][]string
	count   *usageCount

	stack    []scanLevel
	inString bool
	escape   bool
	strIsKey bool
	key      []byte // the key being read, up to a bound
	broken   bool

	capturing bool
	capDepth  int      // len(stack) where the usage object began
	capPath   []string // the target it sits at
	capBuf    []byte
}

// scanLevel is one open container.
type scanLevel struct {
	object     bool
	afterColon bool   // in an object, a value comes next
	key        string // in an object, the key being valued, if a target path names it
}

// maxScanDepth bounds the nesting the scanner follows.
const maxScanDepth = 64

func newJSONUsageScanner(format string, count *usageCount) *jsonUsageScanner {
	return &jsonUsageScanner{format: format, targets: usageTargets[format], count: count}
}

// reset readies the scanner for another document (the next SSE event).
func (s *jsonUsageScanner) reset() {
	s.stack = s.stack[:0]
	s.inString, s.escape, s.strIsKey, s.broken, s.capturing = false, false, false, false, false
	s.key, s.capBuf = s.key[:0], s.capBuf[:0]
}

// interestingKey returns the key if some target path names it, else "".
func interestingKey(k []byte) string {
	switch string(k) {
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

// target returns the target path an object starting now sits at, if any.
func (s *jsonUsageScanner) target() []string {
	var path [4]string
	n := 0
	for _, l := range s.stack {
		if !l.object {
			continue
		}
		if l.key == "" || n == len(path) {
			return nil
		}
		path[n] = l.key
		n++
	}
	for _, t := range s.targets {
		if len(t) == n && slices.Equal(t, path[:n]) {
			return t
		}
	}
	return nil
}

func (s *jsonUsageScanner) write(b []byte) {
	if s.broken {
		return
	}
	for i := 0; i < len(b); i++ {
		if s.inString && !s.escape && !s.strIsKey {
			// Most of a response is text inside strings: jump to the next
			// byte that can end one.
			j := bytes.IndexAny(b[i:], "\"\\")
			if j < 0 {
				j = len(b) - i
			}
			s.capture(b[i : i+j])
			if i += j; i == len(b) {
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
					s.stack[len(s.stack)-1].key = interestingKey(s.key)
				}
			default:
				s.keyByte(c)
			}
			continue
		}
		switch c {
		case '"':
			n := len(s.stack)
			s.inString = true
			s.strIsKey = n > 0 && s.stack[n-1].object && !s.stack[n-1].afterColon
			s.key = s.key[:0]
		case '{', '[':
			if len(s.stack) >= maxScanDepth {
				s.broken = true
				return
			}
			if c == '{' && !s.capturing {
				if t := s.target(); t != nil {
					s.capturing, s.capDepth, s.capPath = true, len(s.stack), t
					s.capBuf = append(s.capBuf[:0], '{')
				}
			}
			s.stack = append(s.stack, scanLevel{object: c == '{'})
		case '}', ']':
			n := len(s.stack)
			if n == 0 {
				s.broken = true
				return
			}
			s.stack = s.stack[:n-1]
			if s.capturing && len(s.stack) == s.capDepth {
				s.capturing = false
				if len(s.capBuf) <= maxUsageObject {
					s.count.observe(s.format, s.capPath, s.capBuf)
				}
			}
		case ':':
			if n := len(s.stack); n > 0 {
				s.stack[n-1].afterColon = true
			}
		case ',':
			if n := len(s.stack); n > 0 && s.stack[n-1].object {
				s.stack[n-1].afterColon, s.stack[n-1].key = false, ""
			}
		}
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
// name is kept cut, which matches none.
func (s *jsonUsageScanner) keyByte(c byte) {
	if s.strIsKey && len(s.key) < 16 {
		s.key = append(s.key, c)
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
		t.scan = newSSEUsageScanner(format, &t.count).write
	} else {
		t.scan = newJSONUsageScanner(format, &t.count).write
	}
	return t
}

func (t *usageTap) Read(p []byte) (int, error) {
	n, err := t.body.Read(p)
	t.scan(p[:n])
	switch {
	case err == io.EOF:
		t.ended = true
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
