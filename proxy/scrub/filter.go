package scrub

import (
	"cmp"
	"math/bits"
	"slices"
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
