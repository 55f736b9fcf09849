package scrub

import "io"

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
