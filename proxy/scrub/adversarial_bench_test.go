package scrub

import (
	"bytes"
	"io"
	"testing"
)

// adversarialKey shares a long run of digits and letters with ordinary
// text, as many real keys do.
const adversarialKey = "sk-REALKEY-perf-0123456789abcdef"

// nearMissBody is n bytes of near-misses of every spelling of every form of
// s's credential: each spelling with its first byte, its last byte or a
// middle byte changed, or cut short by one, so that the filter's anchors hit
// and every verification fails as late as it can.
func nearMissBody(s *Scrubber, n int) []byte {
	var unit bytes.Buffer
	for _, l := range literalSpellings(s) {
		for _, k := range []int{0, len(l) / 2, len(l) - 1} {
			m := bytes.Clone(l)
			m[k] ^= 0x01
			unit.Write(m)
			unit.WriteByte(' ')
		}
		unit.Write(l[:len(l)-1])
		unit.WriteByte('\n')
	}
	return repeatTo(unit.Bytes(), n)
}

func repeatTo(unit []byte, n int) []byte {
	b := bytes.Repeat(unit, n/len(unit)+1)
	return b[:n]
}

// BenchmarkScrubAdversarial: 1 MiB bodies through the scrubber, read 32 KiB
// at a time: a neutral one, one repeating a run of the key's digits, and
// near-misses of every form. Their throughputs should be alike.
func BenchmarkScrubAdversarial(b *testing.B) {
	g := grant{key: adversarialKey, typ: "bearer", format: "Bearer {{credential}}"}
	s := g.scrubber()
	bodies := []struct {
		name string
		body []byte
	}{
		{"neutral", benchBody(1 << 20)},
		{"digits", repeatTo([]byte("0123456789 "), 1<<20)},
		{"near-miss", nearMissBody(s, 1<<20)},
	}
	for _, bc := range bodies {
		b.Run(bc.name, func(b *testing.B) {
			buf := make([]byte, 32<<10)
			b.SetBytes(int64(len(bc.body)))
			for b.Loop() {
				r := s.Reader(io.NopCloser(bytes.NewReader(bc.body)), -1, nil)
				for {
					if _, err := r.Read(buf); err == io.EOF {
						break
					}
				}
			}
		})
	}
}
