package scrub

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"unicode/utf16"
)

// dumpWriters print bytes the way real programs do. Each returns the dump
// of doc and where the bytes of doc[from:to] begin and end in it.
var dumpWriters = []struct {
	name  string
	write func(doc []byte, from, to int) (string, int, int)
}{
	{".NET BitConverter.ToString", joined(func(b byte) string { return fmt.Sprintf("%02X", b) }, "-")},
	{"Python bytes.hex('-')", joined(func(b byte) string { return fmt.Sprintf("%02x", b) }, "-")},
	{"Python bytes.hex('|')", joined(func(b byte) string { return fmt.Sprintf("%02x", b) }, "|")},
	{"Python bytes.hex(':')", joined(func(b byte) string { return fmt.Sprintf("%02x", b) }, ":")},
	{"Go % x", func(doc []byte, from, to int) (string, int, int) {
		return fmt.Sprintf("% x", doc), 3 * from, 3*to - 1
	}},
	{"Go % X", func(doc []byte, from, to int) (string, int, int) {
		return fmt.Sprintf("% X", doc), 3 * from, 3*to - 1
	}},
	{"Go %v of []byte", func(doc []byte, from, to int) (string, int, int) {
		pre := fmt.Sprintf("%v", doc[:from])
		all := fmt.Sprintf("%v", doc)
		key := strings.Trim(fmt.Sprintf("%v", doc[from:to]), "[]")
		start := len(pre) - 1 + 1 // "[a b" then " "
		if from == 0 {
			start = 1
		}
		return all, start, start + len(key)
	}},
	{"Go %#v of []byte", func(doc []byte, from, to int) (string, int, int) {
		all := fmt.Sprintf("%#v", doc)
		key := strings.TrimSuffix(strings.TrimPrefix(fmt.Sprintf("%#v", doc[from:to]), "[]byte{"), "}")
		i := strings.Index(all, key)
		return all, i, i + len(key)
	}},
	{"Java Arrays.toString", joined(func(b byte) string { return fmt.Sprint(int8(b)) }, ", ")},
	{"Node <Buffer>", func(doc []byte, from, to int) (string, int, int) {
		return "<Buffer " + fmt.Sprintf("% x", doc) + ">", len("<Buffer ") + 3*from, len("<Buffer ") + 3*to - 1
	}},
	{"xxd -p grouped by 2", func(doc []byte, from, to int) (string, int, int) {
		h := hex.EncodeToString(doc)
		var b strings.Builder
		pos := map[int]int{}
		for i := range h {
			if i > 0 && i%4 == 0 {
				b.WriteByte(' ')
			}
			pos[i] = b.Len()
			b.WriteByte(h[i])
		}
		return b.String(), pos[2*from], pos[2*to-1] + 1
	}},
	{`Python repr of non-printables (\x..)`, joined(func(b byte) string { return fmt.Sprintf(`\x%02x`, b) }, "")},
	{"every byte percent-encoded", joined(func(b byte) string { return fmt.Sprintf("%%%02X", b) }, "")},
	{"UTF-16LE", utf16Writer(binary.LittleEndian)},
	{"UTF-16BE", utf16Writer(binary.BigEndian)},
	{"UTF-32LE", utf32Writer(binary.LittleEndian)},
	{"UTF-32BE", utf32Writer(binary.BigEndian)},
}

func joined(one func(byte) string, sep string) func([]byte, int, int) (string, int, int) {
	return func(doc []byte, from, to int) (string, int, int) {
		var b strings.Builder
		start, end := 0, 0
		for i, c := range doc {
			if i > 0 {
				b.WriteString(sep)
			}
			if i == from {
				start = b.Len()
			}
			b.WriteString(one(c))
			if i == to-1 {
				end = b.Len()
			}
		}
		return b.String(), start, end
	}
}

// The key's bytes in UTF-16: each ASCII character is one code unit; the
// NUL of the first (big-endian) or the last (little-endian) carries no bit
// of the key.
func utf16Writer(order binary.AppendByteOrder) func([]byte, int, int) (string, int, int) {
	return func(doc []byte, from, to int) (string, int, int) {
		var b []byte
		for _, u := range utf16.Encode([]rune(string(doc))) {
			b = order.AppendUint16(b, u)
		}
		start, end := 2*from, 2*to
		if order == binary.BigEndian {
			start++
		} else {
			end--
		}
		return string(b), start, end
	}
}

func utf32Writer(order binary.AppendByteOrder) func([]byte, int, int) (string, int, int) {
	return func(doc []byte, from, to int) (string, int, int) {
		var b []byte
		for _, r := range string(doc) {
			b = order.AppendUint32(b, uint32(r))
		}
		start, end := 4*from, 4*to
		if order == binary.BigEndian {
			start += 3
		} else {
			end -= 3
		}
		return string(b), start, end
	}
}

// TestScrubberDumps: a key an upstream prints as a byte dump, in any of the
// formats programs use, or answers in UTF-16 or UTF-32, comes out masked,
// split across reads at any of several points.
func TestScrubberDumps(t *testing.T) {
	for _, key := range []string{realKey, awsKey} {
		for _, g := range []grant{
			{key: key, typ: "bearer", format: "Bearer {{credential}}"},
			{key: key, typ: "header", format: "{{credential}}"},
		} {
			s := g.scrubber()
			for _, w := range dumpWriters {
				for _, secret := range []string{key, g.value()} {
					t.Run(fmt.Sprintf("%s/%s/%.10s", w.name, g.typ, secret), func(t *testing.T) {
						doc := []byte("echo: " + secret + " end")
						out, from, to := w.write(doc, len("echo: "), len("echo: ")+len(secret))
						got := scrubAndCompare(t, s, out, []int{5, 77, 78, 200})
						checkMasked(t, w.name, got, from, to)
					})
				}
			}
		}
	}
}

// TestScrubberDumpsLeaveOtherBytes: dumps of other bytes pass unchanged.
func TestScrubberDumpsLeaveOtherBytes(t *testing.T) {
	s := grant{key: realKey, typ: "bearer", format: "Bearer {{credential}}"}.scrubber()
	other := bytes.Repeat([]byte("sk_live_not-the-key "), 20)
	for _, w := range dumpWriters {
		out, _, _ := w.write(other, 0, 1)
		if got := scrubAll(t, s, out); got != out {
			t.Fatalf("%s: changed", w.name)
		}
	}
}
