package scrub

import (
	"slices"
	"strings"
	"unicode/utf8"
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
