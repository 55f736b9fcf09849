package proxy

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
)

// The scrubber masks every occurrence of a secret with '*' of the same
// length, so Content-Length stays true and nothing needs buffering beyond a
// possible partial match at the end of a chunk.
const maskByte = '*'

type scrubber struct {
	secrets [][]byte // distinct, non-empty
	maxLen  int
}

// scrubbers keeps the scrubbers of recently used credentials, so a request
// does not rebuild the encoded forms of its key. Entries expire, so a key
// rotated away does not linger in memory.
var scrubbers = expirable.NewLRU[string, *scrubber](1024, nil, 5*time.Minute)

// scrubberFor returns the scrubber of g's credential as g injects it.
func scrubberFor(g *Grant) *scrubber {
	key := g.AuthFormat + "\x00" + g.Credential
	if s, ok := scrubbers.Get(key); ok {
		return s
	}
	s := newScrubber(g.secretForms())
	scrubbers.Add(key, s)
	return s
}

func newScrubber(forms []string) *scrubber {
	s := &scrubber{}
	for _, f := range forms {
		if f == "" || slices.ContainsFunc(s.secrets, func(b []byte) bool { return string(b) == f }) {
			continue
		}
		s.secrets = append(s.secrets, []byte(f))
		s.maxLen = max(s.maxLen, len(f))
	}
	return s
}

// mask overwrites every complete occurrence of a secret in b.
func (s *scrubber) mask(b []byte) {
	for _, sec := range s.secrets {
		for i := 0; ; {
			j := bytes.Index(b[i:], sec)
			if j < 0 {
				break
			}
			for k := range sec {
				b[i+j+k] = maskByte
			}
			i += j + len(sec)
		}
	}
}

// heldBack returns how many bytes at the end of b might be the start of a
// secret that the next chunk completes.
func (s *scrubber) heldBack(b []byte) int {
	for k := min(s.maxLen-1, len(b)); k > 0; k-- {
		tail := b[len(b)-k:]
		for _, sec := range s.secrets {
			if len(sec) > k && bytes.HasPrefix(sec, tail) {
				return k
			}
		}
	}
	return 0
}

// String returns v with every secret masked.
func (s *scrubber) String(v string) string {
	for _, sec := range s.secrets {
		if strings.Contains(v, string(sec)) {
			b := []byte(v)
			s.mask(b)
			return string(b)
		}
	}
	return v
}

// Header masks secrets in every header value.
func (s *scrubber) Header(h http.Header) {
	for _, values := range h {
		for i, v := range values {
			values[i] = s.String(v)
		}
	}
}

// Reader wraps a body so that no secret, even one split across reads,
// comes out of it. size is the body's length if known, else -1: a small body
// gets a small buffer. atEnd, if set, runs once when src is exhausted: the
// moment an HTTP response's trailers become known.
func (s *scrubber) Reader(src io.ReadCloser, size int64, atEnd func()) io.ReadCloser {
	chunk := scrubChunk
	if size >= 0 && size < scrubChunk {
		chunk = max(int(size)+1, minScrubChunk) // +1: room to see EOF
	}
	return &scrubReader{s: s, src: src, atEnd: atEnd, chunk: chunk}
}

type scrubReader struct {
	s     *scrubber
	src   io.ReadCloser
	buf   []byte // read from src, masked; buf[:ready] may be returned
	ready int
	err   error // from src, returned once buf is drained
	atEnd func()
	chunk int // how much to grow buf by
}

const (
	scrubChunk    = 32 << 10
	minScrubChunk = 512
)

func (r *scrubReader) Read(p []byte) (int, error) {
	for r.ready == 0 {
		if r.err != nil {
			if len(r.buf) > 0 {
				// The stream ended: a held-back tail is not a secret.
				r.ready = len(r.buf)
				break
			}
			return 0, r.err
		}
		r.fill()
	}
	n := copy(p, r.buf[:r.ready])
	r.buf = r.buf[n:]
	r.ready -= n
	return n, nil
}

func (r *scrubReader) fill() {
	if cap(r.buf)-len(r.buf) < r.chunk/2 {
		grown := make([]byte, len(r.buf), len(r.buf)+r.chunk)
		copy(grown, r.buf)
		r.buf = grown
	}
	n, err := r.src.Read(r.buf[len(r.buf):cap(r.buf)])
	r.buf = r.buf[:len(r.buf)+n]
	r.err = err
	if err != nil && r.atEnd != nil {
		r.atEnd()
		r.atEnd = nil
	}
	r.s.mask(r.buf)
	r.ready = len(r.buf) - r.s.heldBack(r.buf)
}

func (r *scrubReader) Close() error { return r.src.Close() }

// jsonEscape returns s as it appears inside a JSON string.
func jsonEscape(s string, escapeHTML bool) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(escapeHTML)
	enc.Encode(s)
	out := strings.TrimSuffix(b.String(), "\n")
	return out[1 : len(out)-1]
}
