package scrub

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
)

// benchBody is n bytes of JSON lines, the kind of body a bulk API returns.
func benchBody(n int) []byte {
	var b bytes.Buffer
	names := []string{"Ada Lovelace", "Grace Hopper", "Alan Turing", "Edsger Dijkstra", "Barbara Liskov"}
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, `{"id":"cus_%08d","name":%q,"email":"user%d@example.com","balance":%d,"url":"https:\/\/api.example.com\/v1\/customers\/cus_%08d"}`+"\n",
			i, names[i%len(names)], i, (i*7919)%100000, i)
	}
	return b.Bytes()[:n]
}

var benchGrant = grant{key: awsKey, typ: "bearer", format: "Bearer {{credential}}"}

// BenchmarkScrub: a 1 MiB body through the scrubber with the full set of
// forms of an AWS-style key, read 32 KiB at a time as ReverseProxy does.
func BenchmarkScrub(b *testing.B) {
	s := benchGrant.scrubber()
	body := benchBody(1 << 20)
	buf := make([]byte, 32<<10)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	b.ReportMetric(float64(len(s.patterns)), "forms")
	for b.Loop() {
		r := s.Reader(io.NopCloser(bytes.NewReader(body)), -1, nil)
		for {
			if _, err := r.Read(buf); err == io.EOF {
				break
			}
		}
	}
}

// BenchmarkScrubSmall: a 32 KiB body of known length, read to the end.
func BenchmarkScrubSmall(b *testing.B) {
	s := benchGrant.scrubber()
	body := benchBody(32 << 10)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := io.Copy(io.Discard, s.Reader(io.NopCloser(bytes.NewReader(body)), int64(len(body)), nil)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkScrubApproaches compares ways to find many literal strings in one
// pass, on the literal spellings the forms expand to (each escapable
// character written raw, as %XX, %xx, \u00XX, \u00xx; every base64 middle):
//   - filter: this scrubber's sampled 4-gram filter (on the forms themselves);
//   - index-per-form: one bytes.Index pass per spelling, the old scrubber;
//   - aho-corasick: a full DFA over the spellings, one table step per byte;
//   - first-byte: a table of the bytes that can begin a spelling, each hit
//     checked against the spellings beginning with it.
func BenchmarkScrubApproaches(b *testing.B) {
	s := benchGrant.scrubber()
	lits := literalSpellings(s)
	body := benchBody(1 << 20)
	b.Logf("%d forms, %d literal spellings", len(s.patterns), len(lits))
	b.Run("filter", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		var spans []span
		for b.Loop() {
			spans = find(s, body, spans[:0])
		}
	})
	b.Run("index-per-form", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			for _, l := range lits {
				for i := 0; ; {
					j := bytes.Index(body[i:], l)
					if j < 0 {
						break
					}
					i += j + 1
				}
			}
		}
	})
	b.Run("aho-corasick", func(b *testing.B) {
		dfa := newACDFA(lits)
		b.SetBytes(int64(len(body)))
		hits := 0
		for b.Loop() {
			hits += dfa.count(body)
		}
	})
	b.Run("first-byte", func(b *testing.B) {
		var starts [256][][]byte
		for _, l := range lits {
			starts[l[0]] = append(starts[l[0]], l)
		}
		b.SetBytes(int64(len(body)))
		hits := 0
		for b.Loop() {
			for i, c := range body {
				for _, l := range starts[c] {
					if bytes.HasPrefix(body[i:], l) {
						hits++
					}
				}
			}
		}
	})
}

// literalSpellings expands every form into literal strings, writing each
// escapable character raw and as upper- and lower-case %XX and \u00XX.
func literalSpellings(s *Scrubber) [][]byte {
	var out [][]byte
	for _, f := range s.forms {
		spellings := []string{""}
		for _, r := range f.text {
			c := string(r)
			ways := []string{c}
			if r < 128 && !isAlnum(byte(r)) && f.kind != formExact {
				x := fmt.Sprintf("%02X", r)
				ways = append(ways, "%"+x, "%"+strings.ToLower(x), `\u00`+x, `\u00`+strings.ToLower(x))
			}
			var next []string
			for _, sp := range spellings {
				for _, w := range ways {
					next = append(next, sp+w)
				}
			}
			spellings = next
		}
		for _, sp := range spellings {
			out = append(out, []byte(sp))
		}
	}
	return out
}

// acDFA is an Aho-Corasick automaton compiled to a full DFA.
type acDFA struct {
	next  [][256]int32
	match []bool
}

func newACDFA(words [][]byte) *acDFA {
	d := &acDFA{next: make([][256]int32, 1), match: make([]bool, 1)}
	for i := range d.next[0] {
		d.next[0][i] = -1
	}
	for _, w := range words {
		s := int32(0)
		for _, c := range w {
			if d.next[s][c] < 0 {
				d.next = append(d.next, [256]int32{})
				d.match = append(d.match, false)
				n := int32(len(d.next) - 1)
				for i := range d.next[n] {
					d.next[n][i] = -1
				}
				d.next[s][c] = n
			}
			s = d.next[s][c]
		}
		d.match[s] = true
	}
	fail := make([]int32, len(d.next))
	var queue []int32
	for c := range 256 {
		if t := d.next[0][c]; t < 0 {
			d.next[0][c] = 0
		} else {
			queue = append(queue, t)
		}
	}
	for len(queue) > 0 {
		s := queue[0]
		queue = queue[1:]
		d.match[s] = d.match[s] || d.match[fail[s]]
		for c := range 256 {
			if t := d.next[s][c]; t < 0 {
				d.next[s][c] = d.next[fail[s]][c]
			} else {
				fail[t] = d.next[fail[s]][c]
				queue = append(queue, t)
			}
		}
	}
	return d
}

func (d *acDFA) count(t []byte) int {
	n, s := 0, int32(0)
	for _, c := range t {
		s = d.next[s][c]
		if d.match[s] {
			n++
		}
	}
	return n
}
