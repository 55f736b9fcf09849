package proxy

import (
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
//  2. A hit is checked against the anchors holding that 4-gram, then the
//     pattern is matched exactly from each start its anchor allows.

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
	// The anchor starts between minPre and maxPre bytes after the start of
	// an occurrence.
	minPre, maxPre int
	maxLen         int // longest occurrence, with the base64 edges
}

type unit struct {
	b   byte  // when set < 0: this byte and no other
	set int16 // index into scrubber.sets: the character's alternatives
}

type span struct{ start, end int }

type filter struct {
	step int // 0: no pattern is long enough to filter
	bits []uint64
	refs map[uint32][]anchorRef
	// spells holds every anchor spelling; refs index into it.
	spells []string
}

type anchorRef struct {
	pat   int32
	spell int32
	off   int32 // of the 4-gram in the spelling
}

// compile turns forms into patterns and builds the filter.
func (s *scrubber) compile(forms []secretForm) {
	setOf := map[string]int16{}
	for _, f := range forms {
		if f.text == "" || s.hasForm(f) {
			continue
		}
		pt := pattern{base64: f.kind == formBase64}
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
				} else {
					s.sets = append(s.sets, runeAlts(raw))
				}
			}
			pt.units = append(pt.units, unit{set: idx})
			i += size
		}
		pt.maxLen = s.length(pt.units, longest)
		if pt.base64 {
			pt.maxLen += 2 * maxAltPerByte
		}
		s.maxLen = max(s.maxLen, pt.maxLen)
		s.nlSafe = s.nlSafe && !strings.Contains(f.text, "\n")
		s.forms = append(s.forms, f)
		s.patterns = append(s.patterns, pt)
	}
	s.buildFilter()
}

func (s *scrubber) hasForm(f secretForm) bool {
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
func (s *scrubber) length(units []unit, which int) int {
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
func (s *scrubber) spellings(units []unit) []string {
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
func (s *scrubber) ways(u unit) []string {
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
func (s *scrubber) chooseAnchor(pt *pattern, ways []int, want int) (from int, spells []string, ok bool) {
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
		return 0, nil, false
	}
	return bestFrom, s.spellings(pt.units[bestFrom:bestTo]), true
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

// buildFilter gives each pattern the longest anchor it can have (up to
// maxAnchor bytes): the step is set by the shortest of them. A pattern with
// no anchor of even 4 bytes (a key of 1 to 3 bytes) goes to short, tried at
// every byte.
func (s *scrubber) buildFilter() {
	type chosen struct {
		pat    int
		spells []string
	}
	var anchors []chosen
	step := maxAnchor - gram + 1
	for i := range s.patterns {
		pt := &s.patterns[i]
		ways := make([]int, len(pt.units))
		for k, u := range pt.units {
			ways[k] = len(s.ways(u))
		}
		found := false
		for want := maxAnchor; want >= gram && !found; want-- {
			from, spells, ok := s.chooseAnchor(pt, ways, want)
			if !ok {
				continue
			}
			found = true
			pt.minPre = s.length(pt.units[:from], shortest)
			pt.maxPre = s.length(pt.units[:from], longest)
			step = min(step, want-gram+1)
			anchors = append(anchors, chosen{i, spells})
		}
		if !found {
			s.short = append(s.short, s.shortPattern(i))
		}
	}
	f := &s.filter
	if len(anchors) == 0 {
		return
	}
	f.step = step
	f.bits = make([]uint64, 1<<filterBits/64)
	f.refs = map[uint32][]anchorRef{}
	for _, a := range anchors {
		for _, sp := range a.spells {
			idx := int32(len(f.spells))
			f.spells = append(f.spells, sp)
			for off := 0; off+gram <= len(sp); off++ {
				w := le32(sp, off)
				h := (w * hashMul) >> (32 - filterBits)
				f.bits[h>>6] |= 1 << (h & 63)
				f.refs[w] = append(f.refs[w], anchorRef{pat: int32(a.pat), spell: idx, off: int32(off)})
			}
		}
	}
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

func (s *scrubber) shortPattern(pi int) shortPattern {
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
func find[T text](s *scrubber, t T, spans []span) []span {
	f := &s.filter
	if step := f.step; step > 0 {
		bits := f.bits
		for i := 0; i+gram <= len(t); i += step {
			w := le32(t, i)
			h := (w * hashMul) >> (32 - filterBits)
			if bits[h>>6]&(1<<(h&63)) != 0 {
				spans = verify(s, t, i, w, spans)
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
	return spans
}

// verify checks a filter hit: the 4-gram w at i.
func verify[T text](s *scrubber, t T, i int, w uint32, spans []span) []span {
	for _, ref := range s.filter.refs[w] {
		sp := s.filter.spells[ref.spell]
		a := i - int(ref.off)
		if a < 0 || a+len(sp) > len(t) || string(t[a:a+len(sp)]) != sp {
			continue
		}
		pt := &s.patterns[ref.pat]
		for p := max(a-pt.maxPre, 0); p <= a-pt.minPre; p++ {
			spans = matchFrom(s, t, int(ref.pat), p, spans)
		}
	}
	return spans
}

// matchFrom appends the occurrence of pattern pi starting at p, if any.
func matchFrom[T text](s *scrubber, t T, pi, p int, spans []span) []span {
	pt := &s.patterns[pi]
	end := matchUnits(s, pt.units, t, p)
	if end < 0 {
		return spans
	}
	if pt.base64 {
		p, end = base64Edges(t, p, end)
	}
	return append(spans, span{p, end})
}

// matchUnits returns where the longest occurrence of units starting at p
// ends, or -1. A raw '%', '&' or '\' is a prefix of its own escapes, so
// several ends may be alive at once: they are tracked as a set.
func matchUnits[T text](s *scrubber, units []unit, t T, p int) int {
	var bufA, bufB [8]int
	cur, next := append(bufA[:0], p), bufB[:0]
	for _, u := range units {
		next = next[:0]
		for _, q := range cur {
			if u.set < 0 {
				if q < len(t) && t[q] == u.b {
					next = addPos(next, q+1)
				}
				continue
			}
			for _, a := range s.sets[u.set] {
				if altAt(a, t, q) {
					next = addPos(next, q+len(a.s))
				}
			}
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
		for _, a := range asciiAlts[c][1:] { // escaped forms first: "%2B" must not lose its "%2"
			if n := len(a.s); left == p && p-n >= 0 && altAt(a, t, p-n) {
				left = p - n
			}
			if right == end && altAt(a, t, end) {
				right = end + len(a.s)
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
