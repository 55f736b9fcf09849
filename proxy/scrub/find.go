package scrub

// find appends to spans every occurrence of a pattern that lies in t.
// Occurrences may repeat and overlap.
func find[T text](s *Scrubber, t T, spans []span) []span {
	f := &s.filter
	if step := f.step; step > 0 {
		bits := f.bits
		var seen verified
		for i := 0; i+gram <= len(t); i += step {
			w := le32(t, i)
			h := (w * hashMul) >> (32 - filterBits)
			if bits[h>>6]&(1<<(h&63)) != 0 {
				spans = verify(s, t, i, w, &seen, spans)
			}
		}
	}
	for _, sp := range s.short {
		for p := range len(t) {
			if sp.first[t[p]] {
				spans = matchFrom(s, t, sp.pat, p, spans)
			}
		}
	}
	return findDependents(s, t, spans)
}

// findDependents appends the occurrences of dependent patterns. Each
// holds its base pattern's units at a fixed unit offset, so it is matched
// from the start of each occurrence of its base: forwards over the base and
// what follows, backwards over what precedes. Only a real occurrence of the
// credential leads here, never a near-miss.
func findDependents[T text](s *Scrubber, t T, spans []span) []span {
	if len(s.dependents) == 0 {
		return spans
	}
	found := len(spans)
	for k := range found {
		sp := spans[k]
		for _, d := range s.dependents[sp.pat] {
			pt := &s.patterns[d]
			if pt.baseAt > 0 && !unitEndsAt(s, pt.units[pt.baseAt-1], t, sp.core) {
				continue // what precedes the credential is not the dependent's
			}
			if end := matchUnits(s, pt, pt.baseAt, t, sp.core); end >= 0 {
				spans = matchBack(s, d, pt.baseAt, t, sp.core, end, spans)
			}
		}
	}
	return spans
}

// verify checks a filter hit: the 4-gram w at i. Each anchor spelling
// found there is extended forwards to the pattern's longest end and
// backwards to every start it can have.
func verify[T text](s *Scrubber, t T, i int, w uint32, seen *verified, spans []span) []span {
	for _, ref := range s.filter.lookup(w) {
		a := i - int(ref.off)
		if a < 0 || a+8 <= len(t) && le64(t, a)&ref.headMask != ref.head {
			continue
		}
		sp := s.filter.spells[ref.spell]
		if a+len(sp) > len(t) || seen.again(ref.spell, a) || string(t[a:a+len(sp)]) != sp {
			continue
		}
		pt := &s.patterns[ref.pat]
		if pt.literal {
			// One comparison of the whole pattern (hex, dumps, UTF-16).
			if p, e := a-pt.from, a-pt.from+len(pt.lit); p >= 0 && e <= len(t) && string(t[p:e]) == pt.lit {
				spans = appendSpan(spans, t, pt, int(ref.pat), p, e)
			}
			continue
		}
		end := matchUnits(s, pt, pt.to, t, a+len(sp))
		if end < 0 {
			continue
		}
		spans = matchBack(s, int(ref.pat), pt.from, t, a, end, spans)
	}
	return spans
}

// verified remembers where each anchor spelling (by its index, modulo the
// size) was last checked: an anchor longer than the step holds two samples,
// and the second need not check it again.
type verified [64]struct{ spell, a int32 }

func (v *verified) again(spell int32, a int) bool {
	k := &v[spell&63]
	if k.spell == spell && k.a == int32(a+1) {
		return true
	}
	k.spell, k.a = spell, int32(a+1)
	return false
}
