package scrub

import (
	"cmp"
	"math/bits"
	"slices"
	"strings"
	"unicode/utf8"
)

// The scrubber's matcher. A pattern is a secret form as a sequence of units:
// a byte that every encoder writes as it is (a letter or digit), or a
// character with its alternatives. Finding patterns takes two steps:
//
//  1. A filter samples the text every step bytes and looks the 4 bytes there
//     up in a bitmap of the 4-grams of each pattern's anchor: a stretch of at
//     least step+3 bytes that every occurrence of the pattern contains in one
//     of a few spellings (every way of writing its escapable characters, hex
//     digits in either case). Every occurrence thus contains a sampled
//     position whose 4-gram is in the bitmap. The cost is one load, multiply
//     and bit test per step bytes, whatever the number of patterns.
//  2. A hit is looked up in a table of the anchors holding that 4-gram; each
//     anchor spelling found there is extended backwards and forwards, unit by
//     unit, to the pattern's possible starts and its longest end.
//
// The cost of a hit is bounded by the pattern, not by the text: an anchor is
// chosen for few spellings (a text that repeats pieces of the key makes every
// sample hit, and each spelling sharing the 4-gram costs a comparison), and an
// extension tries only the alternatives that begin (or end) with the byte at
// hand. So a body of near-misses costs a small constant per byte, like any
// other (BenchmarkScrubAdversarial).

const (
	gram       = 4  // bytes per sampled n-gram
	maxAnchor  = 32 // longest anchor worth having: the step is at most 29
	maxSpells  = 64 // most spellings an anchor may have
	filterBits = 16 // bitmap of 2^16 bits, 8 KiB
	hashMul    = 0x9E3779B1
)

type text interface{ ~string | ~[]byte }

type pattern struct {
	units  []unit
	base64 bool // mask one base64 character on each side (formBase64)
	// units[from:to] is the anchor: a hit on one of its spellings is
	// extended backwards over units[:from] and forwards over units[to:].
	from, to int
	maxLen   int // longest occurrence, with the base64 edges
	// dependent: looked for only where pattern base occurs, whose units
	// its own hold from unit baseAt on (findDependents).
	dependent    bool
	base, baseAt int
	// lit holds the units' bytes (0 for a character with alternatives);
	// a literal unit k belongs to the run of literal units
	// [runStart[k], runEnd[k]), compared in one go.
	lit              string
	runStart, runEnd []int32
	literal          bool // every unit is literal: lit is the whole pattern
}

type unit struct {
	b   byte  // when set < 0: this byte and no other
	set int16 // index into Scrubber.sets: the character's alternatives
}

// span is an occurrence to mask: [start, end), with the base64 edges. pat
// is its pattern and core its start before the edges, for findDependents.
type span struct{ start, end, pat, core int }

type filter struct {
	step int // 0: no pattern is long enough to filter
	bits []uint64
	// grams is an open-addressed table of the anchors' 4-grams: a hit costs
	// a multiply and a probe or two, not a map lookup.
	grams     []gramSlot
	gramShift uint32
	refs      []anchorRef // grouped by 4-gram; gramSlot indexes them
	// spells holds every anchor spelling; refs index into it.
	spells []string
}

// gramSlot is one 4-gram's run of refs; n == 0 marks an empty slot.
type gramSlot struct {
	w       uint32
	from, n int32
}

const gramMul = 0x85EBCA6B

// lookup returns the refs of the anchors holding the 4-gram w.
func (f *filter) lookup(w uint32) []anchorRef {
	mask := uint32(len(f.grams) - 1)
	for h := (w * gramMul) >> f.gramShift; ; h = (h + 1) & mask {
		sl := &f.grams[h]
		if sl.n == 0 {
			return nil
		}
		if sl.w == w {
			return f.refs[sl.from : sl.from+sl.n]
		}
	}
}

type anchorRef struct {
	pat   int32
	spell int32
	off   int32 // of the 4-gram in the spelling
	// head is the spelling's first 8 bytes (fewer, if shorter, under
	// headMask): compared in one load before the whole spelling is.
	head, headMask uint64
}

// compile turns forms into patterns and builds the filter.
func (s *Scrubber) compile(forms []secretForm) {
	setOf := map[string]int16{}
	for _, f := range forms {
		if f.text == "" || s.hasForm(f) {
			continue
		}
		pt := pattern{base64: f.kind == formBase64, dependent: f.dependent}
		for i := 0; i < len(f.text); {
			c := f.text[i]
			if isAlnum(c) || f.kind == formExact {
				pt.units = append(pt.units, unit{b: c, set: -1})
				i++
				continue
			}
			size := 1
			if c >= utf8.RuneSelf {
				_, size = utf8.DecodeRuneInString(f.text[i:])
			}
			raw := f.text[i : i+size]
			idx, ok := setOf[raw]
			if !ok {
				idx = int16(len(s.sets))
				setOf[raw] = idx
				if c < utf8.RuneSelf {
					s.sets = append(s.sets, asciiAlts[c])
					s.index = append(s.index, asciiIndex[c])
				} else {
					alts := runeAlts(raw)
					s.sets = append(s.sets, alts)
					s.index = append(s.index, newAltIndex(alts))
				}
			}
			pt.units = append(pt.units, unit{set: idx})
			i += size
		}
		pt.runs()
		pt.maxLen = s.length(pt.units, longest)
		if pt.base64 {
			pt.maxLen += 2 * maxAltPerByte
		}
		s.maxLen = max(s.maxLen, pt.maxLen)
		s.nlSafe = s.nlSafe && !strings.Contains(f.text, "\n")
		s.forms = append(s.forms, f)
		s.patterns = append(s.patterns, pt)
	}
	s.findBases()
	s.buildFilter()
}

// runs fills in lit, runStart and runEnd.
func (pt *pattern) runs() {
	n := len(pt.units)
	lit := make([]byte, n)
	pt.runStart, pt.runEnd = make([]int32, n), make([]int32, n)
	for k, u := range pt.units {
		if u.set >= 0 {
			continue
		}
		lit[k] = u.b
		pt.runStart[k] = int32(k)
		if k > 0 && pt.units[k-1].set < 0 {
			pt.runStart[k] = pt.runStart[k-1]
		}
	}
	for k := n - 1; k >= 0; k-- {
		if pt.units[k].set >= 0 {
			continue
		}
		pt.runEnd[k] = int32(k + 1)
		if k+1 < n && pt.units[k+1].set < 0 {
			pt.runEnd[k] = pt.runEnd[k+1]
		}
	}
	pt.lit = string(lit)
	pt.literal = n > 0 && pt.units[0].set < 0 && pt.runEnd[0] == int32(n)
}

// findBases gives each dependent pattern an independent one whose units it
// holds; one that holds none is made independent.
func (s *Scrubber) findBases() {
	for d := range s.patterns {
		dp := &s.patterns[d]
		if !dp.dependent {
			continue
		}
		dp.dependent = false
		for b, bp := range s.patterns {
			if bp.dependent || b == d {
				continue
			}
			if at := indexUnits(dp.units, bp.units); at >= 0 {
				dp.dependent, dp.base, dp.baseAt = true, b, at
				break
			}
		}
	}
}

func indexUnits(units, sub []unit) int {
	for i := 0; i+len(sub) <= len(units); i++ {
		if slices.Equal(units[i:i+len(sub)], sub) {
			return i
		}
	}
	return -1
}

func (s *Scrubber) hasForm(f secretForm) bool {
	for _, g := range s.forms {
		if g == f {
			return true
		}
	}
	return false
}

const (
	shortest = iota
	longest
)

// length is the byte length of units written in their shortest or longest
// way.
func (s *Scrubber) length(units []unit, which int) int {
	n := 0
	for _, u := range units {
		if u.set < 0 {
			n++
			continue
		}
		best := -1
		for _, a := range s.sets[u.set] {
			if best < 0 || which == longest && len(a.s) > best || which == shortest && len(a.s) < best {
				best = len(a.s)
			}
		}
		n += best
	}
	return n
}

// spellings lists the ways to write units, or nil if there are more than
// maxSpells.
func (s *Scrubber) spellings(units []unit) []string {
	out := []string{""}
	for _, u := range units {
		ways := s.ways(u)
		if len(out)*len(ways) > maxSpells {
			return nil
		}
		next := make([]string, 0, len(out)*len(ways))
		for _, o := range out {
			for _, w := range ways {
				next = append(next, o+w)
			}
		}
		out = next
	}
	return out
}

// ways lists every way to write a unit: each alternative with its
// case-insensitive letters in every combination of cases.
func (s *Scrubber) ways(u unit) []string {
	if u.set < 0 {
		return []string{string(u.b)}
	}
	var out []string
	for _, a := range s.sets[u.set] {
		variants := []string{a.s}
		for i := range len(a.s) {
			if c := a.s[i]; a.fold&(1<<i) != 0 && 'a' <= c && c <= 'z' {
				for _, v := range variants {
					variants = append(variants, v[:i]+string(c-'a'+'A')+v[i+1:])
				}
			}
		}
		for _, v := range variants {
			if !contains(out, v) {
				out = append(out, v)
			}
		}
	}
	return out
}

// chooseAnchor picks the stretch of a pattern's units of at least want
// bytes (in their shortest spelling) with the fewest spellings and, among
// those, the fewest 4-grams that look like ordinary text. ok is false if
// every stretch has more than maxSpells spellings, or the pattern is shorter
// than want.
// ways[k] is how many ways there are to write pt.units[k].
func (s *Scrubber) chooseAnchor(pt *pattern, ways []int, want int) (from, to int, spells []string, ok bool) {
	best, bestText, bestFrom, bestTo := maxSpells+1, 0, 0, 0
	for i := range pt.units {
		n, count, j := 0, 1, i
		for j < len(pt.units) && n < want && count <= maxSpells {
			n += s.length(pt.units[j:j+1], shortest)
			count *= ways[j]
			j++
		}
		if n < want && count <= maxSpells {
			break // too short from here on
		}
		if n < want || count > best {
			continue
		}
		text := textLike(pt.units[i:j])
		if count < best || text < bestText {
			best, bestText, bestFrom, bestTo = count, text, i, j
		}
	}
	if best > maxSpells {
		return 0, 0, nil, false
	}
	return bestFrom, bestTo, s.spellings(pt.units[bestFrom:bestTo]), true
}

// textLike counts the 4-grams of units that are all lower-case letters or
// all digits: such 4-grams turn up in ordinary text and numbers, and every
// sampled one costs a lookup.
func textLike(units []unit) int {
	n := 0
	for i := 0; i+gram <= len(units); i++ {
		lowers, digits := 0, 0
		for _, u := range units[i : i+gram] {
			switch {
			case u.set >= 0:
			case 'a' <= u.b && u.b <= 'z':
				lowers++
			case '0' <= u.b && u.b <= '9':
				digits++
			}
		}
		if lowers == gram || digits == gram {
			n++
		}
	}
	return n
}

// buildFilter gives each pattern the anchor that costs least per byte of
// text whose every sample hits (a body of pieces of the key): a sample costs
// about as much as comparing one spelling, so an anchor of n bytes with k
// spellings costs (1+k)/(n-3) at worst. The step is set by the shortest
// anchor. A pattern with no anchor of even 4 bytes (a key of 1 to 3 bytes)
// goes to short, tried at every byte.
func (s *Scrubber) buildFilter() {
	type chosen struct {
		pat    int
		spells []string
	}
	var anchors []chosen
	step := maxAnchor - gram + 1
	for i := range s.patterns {
		pt := &s.patterns[i]
		if pt.dependent {
			if s.dependents == nil {
				s.dependents = make([][]int, len(s.patterns))
			}
			s.dependents[pt.base] = append(s.dependents[pt.base], i)
			continue
		}
		ways := make([]int, len(pt.units))
		for k, u := range pt.units {
			ways[k] = len(s.ways(u))
		}
		var best []string
		bestCost, bestWant := 0.0, 0
		for want := maxAnchor; want >= gram; want-- {
			if best != nil && 2/float64(want-gram+1) >= bestCost {
				break // a shorter anchor costs more even with one spelling
			}
			from, to, spells, ok := s.chooseAnchor(pt, ways, want)
			if !ok {
				continue
			}
			if cost := float64(1+len(spells)) / float64(want-gram+1); best == nil || cost < bestCost {
				best, bestCost, bestWant = spells, cost, want
				pt.from, pt.to = from, to
			}
		}
		if best == nil {
			s.short = append(s.short, s.shortPattern(i))
			continue
		}
		step = min(step, bestWant-gram+1)
		anchors = append(anchors, chosen{i, best})
	}
	f := &s.filter
	if len(anchors) == 0 {
		return
	}
	f.step = step
	f.bits = make([]uint64, 1<<filterBits/64)
	type gramRef struct {
		w   uint32
		ref anchorRef
	}
	var all []gramRef
	for _, a := range anchors {
		for _, sp := range a.spells {
			idx := int32(len(f.spells))
			f.spells = append(f.spells, sp)
			for off := 0; off+gram <= len(sp); off++ {
				w := le32(sp, off)
				h := (w * hashMul) >> (32 - filterBits)
				f.bits[h>>6] |= 1 << (h & 63)
				head, headMask := le64Prefix(sp)
				all = append(all, gramRef{w, anchorRef{pat: int32(a.pat), spell: idx, off: int32(off), head: head, headMask: headMask}})
			}
		}
	}
	slices.SortStableFunc(all, func(x, y gramRef) int { return cmp.Compare(x.w, y.w) })
	distinct := 0
	for i := range all {
		if i == 0 || all[i].w != all[i-1].w {
			distinct++
		}
	}
	bits := uint32(bits.Len(uint(2*distinct - 1)))
	f.grams = make([]gramSlot, 1<<bits)
	f.gramShift = 32 - bits
	f.refs = make([]anchorRef, len(all))
	mask := uint32(len(f.grams) - 1)
	for i := 0; i < len(all); {
		j := i
		for j < len(all) && all[j].w == all[i].w {
			f.refs[j] = all[j].ref
			j++
		}
		h := (all[i].w * gramMul) >> f.gramShift
		for f.grams[h].n != 0 {
			h = (h + 1) & mask
		}
		f.grams[h] = gramSlot{w: all[i].w, from: int32(i), n: int32(j - i)}
		i = j
	}
}

// le64Prefix is up to the first 8 bytes of s, little-endian, and the mask
// of the bytes it holds.
func le64Prefix(s string) (v, mask uint64) {
	for i := range min(len(s), 8) {
		v |= uint64(s[i]) << (8 * i)
		mask |= 0xff << (8 * i)
	}
	return v, mask
}

func le64[T text](t T, i int) uint64 {
	_ = t[i+7]
	return uint64(t[i]) | uint64(t[i+1])<<8 | uint64(t[i+2])<<16 | uint64(t[i+3])<<24 |
		uint64(t[i+4])<<32 | uint64(t[i+5])<<40 | uint64(t[i+6])<<48 | uint64(t[i+7])<<56
}

func le32[T text](t T, i int) uint32 {
	_ = t[i+3]
	return uint32(t[i]) | uint32(t[i+1])<<8 | uint32(t[i+2])<<16 | uint32(t[i+3])<<24
}

// A shortPattern has no anchor the filter can use: a key of 1 to 3 bytes,
// or one where every 4 bytes hold several characters that have escapes. It
// is tried at every byte that can begin it.
type shortPattern struct {
	pat   int
	first [256]bool
}

func (s *Scrubber) shortPattern(pi int) shortPattern {
	sp := shortPattern{pat: pi}
	u := s.patterns[pi].units[0]
	if u.set < 0 {
		sp.first[u.b] = true
		return sp
	}
	for _, a := range s.sets[u.set] {
		sp.first[a.s[0]] = true
		if a.fold&1 != 0 {
			sp.first[a.s[0]&^0x20] = true // its upper case
		}
	}
	return sp
}

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

// altIndex tells, for each byte, which of a set's alternatives (by bit)
// begin with it and which end with it, so that extending a match tries
// only those that can fit.
type altIndex struct{ first, last [256]uint64 }

func newAltIndex(alts []alt) *altIndex {
	if len(alts) > 64 {
		panic("scrub: a character has more than 64 alternatives")
	}
	x := &altIndex{}
	for i, a := range alts {
		bit := uint64(1) << i
		n := len(a.s)
		for _, c := range caseVariants(a.s[0], a.fold&1 != 0) {
			x.first[c] |= bit
		}
		for _, c := range caseVariants(a.s[n-1], a.fold&(1<<(n-1)) != 0) {
			x.last[c] |= bit
		}
	}
	return x
}

func caseVariants(c byte, fold bool) []byte {
	if fold && 'a' <= c && c <= 'z' {
		return []byte{c, c - 'a' + 'A'}
	}
	return []byte{c}
}

// asciiIndex indexes asciiAlts, once for every scrubber.
var asciiIndex = func() (t [utf8.RuneSelf]*altIndex) {
	for c, alts := range asciiAlts {
		if alts != nil {
			t[c] = newAltIndex(alts)
		}
	}
	return t
}()

func altAt[T text](a alt, t T, p int) bool {
	if p+len(a.s) > len(t) {
		return false
	}
	for i := range len(a.s) {
		c := t[p+i]
		if a.fold&(1<<i) != 0 {
			c = lower[c]
		}
		if c != a.s[i] {
			return false
		}
	}
	return true
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
