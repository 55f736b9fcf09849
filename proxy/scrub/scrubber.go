package scrub

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/phantomvault/phantom/internal/ttlcache"
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
	// folded is the credential in lower case: header names are
	// canonicalised, which changes their case.
	folded string
}

// New returns the scrubber of credential as the proxy sends it in wires.
func New(credential string, wires ...Wire) *Scrubber {
	s := &Scrubber{nlSafe: true, folded: strings.ToLower(credential)}
	s.compile(formsOf(credential, wires))
	s.hold = max(holdFor(credential, wires), s.maxLen-1, 0)
	return s
}

// holdFor bounds the longest occurrence of any form, less one, from the
// lengths of the credential and the wires alone: a character is written in
// at most maxAltPerByte bytes per byte; a base64 middle of n bytes has at
// most 4n/3+1 characters, and one more on each side is masked. So the tail
// a body holds back tells nothing of the credential's bytes.
func holdFor(credential string, wires []Wire) int {
	text, encoded := len(credential), len(credential)
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
// name holds the credential (a name cannot be masked: it would no longer be
// a valid header name).
func (s *Scrubber) Header(h http.Header) {
	for name, values := range h {
		if s.folded != "" && strings.Contains(strings.ToLower(name), s.folded) {
			delete(h, name)
			continue
		}
		for i, v := range values {
			values[i] = s.String(v)
		}
	}
}

// Cache keeps the scrubbers of recently used credentials, so a request does
// not rebuild the patterns of its key. Entries expire, so a key rotated away
// does not linger in memory. It is safe for concurrent use.
type Cache struct {
	lru *ttlcache.Cache[string, *Scrubber]
}

// NewCache returns an empty cache.
func NewCache() *Cache {
	return &Cache{lru: ttlcache.New[string, *Scrubber](1024, 5*time.Minute)}
}

// For returns New(credential, wires...), built once for the same
// credential and wires until it expires.
func (c *Cache) For(credential string, wires ...Wire) *Scrubber {
	key := cacheKey(credential, wires)
	if s, ok := c.lru.Get(key); ok {
		return s
	}
	s := New(credential, wires...)
	c.lru.Add(key, s)
	return s
}

// cacheKey holds every input of New, each string after its length, so that
// no two inputs share a key whatever bytes they hold.
func cacheKey(credential string, wires []Wire) string {
	k := strconv.AppendInt(nil, int64(len(credential)), 10)
	k = append(append(k, ':'), credential...)
	for _, w := range wires {
		k = strconv.AppendBool(append(k, '|'), w.EncodingsOnly)
		k = strconv.AppendInt(append(k, ','), int64(w.MaxLen), 10)
		k = strconv.AppendInt(append(k, ','), int64(len(w.Value)), 10)
		k = append(append(k, ':'), w.Value...)
	}
	return string(k)
}

// Sweep removes expired scrubbers from memory; an expired one is never
// returned, swept or not.
func (c *Cache) Sweep() { c.lru.Sweep() }

// Purge forgets every scrubber.
func (c *Cache) Purge() { c.lru.Purge() }

// Reader wraps a body so that no form, even one split across reads, comes
// out of it. size is the body's length if known, else -1: a small body gets
// a small buffer. atEnd, if set, runs once when src is exhausted: the moment
// an HTTP response's trailers become known.
//
// A read that ends in '\n' is released whole, so server-sent events and
// JSON lines flow at once. Any other read keeps its last s.hold bytes until
// more arrive or the body ends. What is held back depends on the credential's
// length only, never on whether the tail could begin a form: a response that
// echoes a guess of the key's first bytes comes out exactly as fast as any
// other (no byte-by-byte timing oracle).
func (s *Scrubber) Reader(src io.ReadCloser, size int64, atEnd func()) io.ReadCloser {
	chunk := scrubChunk
	if size >= 0 && size < scrubChunk {
		chunk = max(int(size)+1, minScrubChunk) // +1: room to see EOF
	}
	return &scrubReader{s: s, src: src, atEnd: atEnd, chunk: chunk}
}

type scrubReader struct {
	s     *Scrubber
	src   io.ReadCloser
	held  []byte // read and scanned, not yet released; never masked in place
	pend  int    // held[:pend] is the end of a form that began in released bytes
	out   []byte // released bytes not yet returned (when the caller's buffer was too small to work in)
	work  []byte // buffer for callers with small buffers
	spans []span
	err   error // from src
	atEnd func()
	chunk int
}

const (
	scrubChunk    = 32 << 10
	minScrubChunk = 512
	// minDirect: a caller's buffer with room for the held tail and this
	// much more is read into directly, sparing a copy of the body.
	minDirect = 4 << 10
)

func (r *scrubReader) Read(p []byte) (int, error) {
	if len(r.out) > 0 {
		n := copy(p, r.out)
		r.out = r.out[n:]
		return n, nil
	}
	if len(p) == 0 {
		return 0, nil
	}
	for r.err == nil {
		w, direct := p, len(p) >= len(r.held)+minDirect
		if !direct {
			if r.work == nil {
				r.work = make([]byte, r.chunk+r.s.hold)
			}
			w = r.work
		}
		h := copy(w, r.held)
		n, err := r.src.Read(w[h:])
		if err != nil {
			r.err = err
			if r.atEnd != nil {
				r.atEnd()
				r.atEnd = nil
			}
		}
		released := r.scrub(w[:h+n], err != nil)
		if released == 0 {
			continue
		}
		if direct {
			return released, nil
		}
		n = copy(p, w[:released])
		r.out = w[n:released]
		return n, nil
	}
	return 0, r.err
}

// scrub scans w, the held tail followed by new bytes, decides how much of it
// to release, masks the forms in that part, keeps the rest in r.held and
// returns the length released. A form that starts in the released part and
// ends in the held one is masked up to the cut now and recorded in r.pend for
// the rest; a form wholly in the held part is found again next time. Held
// bytes are kept as they came, so the next scan sees a form that overlaps a
// masked one.
func (r *scrubReader) scrub(w []byte, eof bool) int {
	spans := find(r.s, w, r.spans[:0])
	released := len(w)
	if !eof && (len(w) == 0 || w[len(w)-1] != '\n' || !r.s.nlSafe) {
		released = max(len(w)-r.s.hold, 0)
	}
	pend := max(r.pend-released, 0)
	mask(w, 0, min(r.pend, released))
	for _, sp := range spans {
		if sp.start < released {
			mask(w, sp.start, min(sp.end, released))
			pend = max(pend, sp.end-released)
		}
	}
	r.held = append(r.held[:0], w[released:]...)
	r.pend = pend
	r.spans = spans[:0]
	return released
}

func (r *scrubReader) Close() error { return r.src.Close() }
