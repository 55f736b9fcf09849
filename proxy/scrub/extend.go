package scrub

import (
	"math/bits"
)

// matchBack appends an occurrence of pattern pi ending at end for every
// start from which its units[:from] lead to a.
func matchBack[T text](s *Scrubber, pi, from int, t T, a, end int, spans []span) []span {
	pt := &s.patterns[pi]
	var bufA, bufB [8]int
	cur, next := append(bufA[:0], a), bufB[:0]
	for k := from; k > 0; {
		u := pt.units[k-1]
		next = next[:0]
		if u.set < 0 {
			j := int(pt.runStart[k-1])
			lit := pt.lit[j:k]
			for _, q := range cur {
				if q >= len(lit) && string(t[q-len(lit):q]) == lit {
					next = addPos(next, q-len(lit))
				}
			}
			k = j
		} else {
			for _, q := range cur {
				if q == 0 {
					continue
				}
				for m := s.index[u.set].last[t[q-1]]; m != 0; m &= m - 1 {
					if a := s.sets[u.set][bits.TrailingZeros64(m)]; len(a.s) <= q && altAt(a, t, q-len(a.s)) {
						next = addPos(next, q-len(a.s))
					}
				}
			}
			k--
		}
		if len(next) == 0 {
			return spans
		}
		cur, next = next, cur
	}
	for _, p := range cur {
		spans = appendSpan(spans, t, pt, pi, p, end)
	}
	return spans
}

// matchFrom appends the occurrence of pattern pi starting at p, if any.
func matchFrom[T text](s *Scrubber, t T, pi, p int, spans []span) []span {
	pt := &s.patterns[pi]
	end := matchUnits(s, pt, 0, t, p)
	if end < 0 {
		return spans
	}
	return appendSpan(spans, t, pt, pi, p, end)
}

// unitEndsAt reports whether u can be written just before q.
func unitEndsAt[T text](s *Scrubber, u unit, t T, q int) bool {
	if q == 0 {
		return false
	}
	if u.set < 0 {
		return t[q-1] == u.b
	}
	for m := s.index[u.set].last[t[q-1]]; m != 0; m &= m - 1 {
		if a := s.sets[u.set][bits.TrailingZeros64(m)]; len(a.s) <= q && altAt(a, t, q-len(a.s)) {
			return true
		}
	}
	return false
}

// appendSpan appends the occurrence [p, end) of pattern pi, with its base64
// edges.
func appendSpan[T text](spans []span, t T, pt *pattern, pi, p, end int) []span {
	sp := span{p, end, pi, p}
	if pt.base64 {
		sp.start, sp.end = base64Edges(t, p, end)
	}
	return append(spans, sp)
}

// matchUnits returns where the longest occurrence of units starting at p
// ends, or -1. A raw '%', '&' or '\' is a prefix of its own escapes, so
// several ends may be alive at once: they are tracked as a set.
func matchUnits[T text](s *Scrubber, pt *pattern, k int, t T, p int) int {
	var bufA, bufB [8]int
	cur, next := append(bufA[:0], p), bufB[:0]
	for k < len(pt.units) {
		u := pt.units[k]
		next = next[:0]
		if u.set < 0 {
			j := int(pt.runEnd[k])
			lit := pt.lit[k:j]
			for _, q := range cur {
				if q+len(lit) <= len(t) && string(t[q:q+len(lit)]) == lit {
					next = addPos(next, q+len(lit))
				}
			}
			k = j
		} else {
			for _, q := range cur {
				if q >= len(t) {
					continue
				}
				for m := s.index[u.set].first[t[q]]; m != 0; m &= m - 1 {
					if a := s.sets[u.set][bits.TrailingZeros64(m)]; altAt(a, t, q) {
						next = addPos(next, q+len(a.s))
					}
				}
			}
			k++
		}
		if len(next) == 0 {
			return -1
		}
		cur, next = next, cur
	}
	end := -1
	for _, q := range cur {
		end = max(end, q)
	}
	return end
}

func addPos(set []int, q int) []int {
	for _, x := range set {
		if x == q {
			return set
		}
	}
	return append(set, q)
}

// base64Edges widens a base64 middle [p, end) by the character on each
// side, raw or escaped, if it is a base64 character: each mixes 2 or 4 bits
// of the secret with bits of the neighbouring bytes.
func base64Edges[T text](t T, p, end int) (int, int) {
	left, right := p, end
	for _, c := range []byte("+/-_") {
		// Escaped forms first: "%2B" must not lose its "%2".
		if left == p && p > 0 {
			for m := asciiIndex[c].last[t[p-1]] &^ 1; m != 0; m &= m - 1 {
				if a := asciiAlts[c][bits.TrailingZeros64(m)]; p-len(a.s) >= 0 && altAt(a, t, p-len(a.s)) {
					left = p - len(a.s)
					break
				}
			}
		}
		if right == end && end < len(t) {
			for m := asciiIndex[c].first[t[end]] &^ 1; m != 0; m &= m - 1 {
				if a := asciiAlts[c][bits.TrailingZeros64(m)]; altAt(a, t, end) {
					right = end + len(a.s)
					break
				}
			}
		}
	}
	if left == p && p > 0 && isBase64Char(t[p-1]) {
		left = p - 1
	}
	if right == end && end < len(t) && isBase64Char(t[end]) {
		right = end + 1
	}
	return left, right
}

func isBase64Char(c byte) bool {
	return isAlnum(c) || c == '+' || c == '/' || c == '-' || c == '_'
}
