// Package token defines the phantom token format: a prefix, 256 random bits in
// base62, and a checksum anyone can verify offline. The engine mints tokens;
// the proxy checks their shape before asking Vault about them.
package token

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/big"
	"regexp"
	"strings"
)

// A phantom token is prefix + body + checksum:
//
//	phm_ 0AbC...(43 base62 chars: 256 random bits) xYz123 (6 base62 chars)
//
// The checksum is the CRC-32 (IEEE) of the body. It lets the proxy reject
// garbage without asking Vault and lets secret scanners recognise a leaked
// token whatever prefix its route chose; it protects nothing by itself (the
// 256 random bits do).
const (
	DefaultPrefix       = "phm_"
	BodyLen             = 43 // ceil(256 / log2(62))
	ChecksumLen         = 6  // ceil(32 / log2(62))
	randomBytes         = 32
	suffixLen           = BodyLen + ChecksumLen
	maxPrefixLen        = 32
	base62Alphabet      = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	accessorRandomBytes = 16
)

// ValidPrefix reports whether p may prefix a token: 1-32 of A-Z a-z 0-9 _ -.
func ValidPrefix(p string) bool { return prefixRe.MatchString(p) }

var (
	prefixRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

	errFormat   = errors.New("not a phantom token")
	errChecksum = errors.New("phantom token checksum mismatch")
)

// New returns a fresh token with the given prefix, drawing from r.
func New(r io.Reader, prefix string) (string, error) {
	var raw [randomBytes]byte
	if _, err := io.ReadFull(r, raw[:]); err != nil {
		return "", fmt.Errorf("reading random bytes: %w", err)
	}
	body := base62(raw[:], BodyLen)
	return prefix + body + checksum(body), nil
}

// NewAccessor returns a random, non-secret handle for a token: it is what
// logs, audit records and operators use to name a token.
func NewAccessor(r io.Reader) (string, error) {
	var raw [accessorRandomBytes]byte
	if _, err := io.ReadFull(r, raw[:]); err != nil {
		return "", fmt.Errorf("reading random bytes: %w", err)
	}
	return AccessorPrefix + base62(raw[:], 22), nil
}

// AccessorPrefix starts every accessor.
const AccessorPrefix = "pha_"

// AccessorShard returns the two characters after an accessor's prefix, and
// false for a string not shaped like an accessor. Accessors sharing them
// sort together, so the engine indexes accessors by them and lists the index
// one shard at a time, in order.
func AccessorShard(accessor string) (string, bool) {
	rest, ok := strings.CutPrefix(accessor, AccessorPrefix)
	if !ok || len(rest) < 2 || !isBase62(rest) {
		return "", false
	}
	return rest[:2], true
}

// Check reports whether s has the shape and checksum of a phantom token
// with any valid prefix. It needs no secret, so the proxy calls it too.
func Check(s string) error {
	if len(s) <= suffixLen || len(s) > suffixLen+maxPrefixLen {
		return errFormat
	}
	split := len(s) - suffixLen
	prefix, body, sum := s[:split], s[split:len(s)-ChecksumLen], s[len(s)-ChecksumLen:]
	if !prefixRe.MatchString(prefix) || !isBase62(body) || !isBase62(sum) {
		return errFormat
	}
	if checksum(body) != sum {
		return errChecksum
	}
	return nil
}

func checksum(body string) string {
	var b [4]byte
	c := crc32.ChecksumIEEE([]byte(body))
	b[0], b[1], b[2], b[3] = byte(c>>24), byte(c>>16), byte(c>>8), byte(c)
	return base62(b[:], ChecksumLen)
}

// base62 encodes raw as a big-endian number, left-padded with '0' to width.
func base62(raw []byte, width int) string {
	n := new(big.Int).SetBytes(raw)
	base, mod := big.NewInt(62), new(big.Int)
	out := make([]byte, width)
	for i := width - 1; i >= 0; i-- {
		n.DivMod(n, base, mod)
		out[i] = base62Alphabet[mod.Int64()]
	}
	return string(out)
}

func isBase62(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z') {
			return false
		}
	}
	return true
}

// Find returns the start and end of the first phantom token embedded in s,
// whatever surrounds it (a path segment such as "bot<token>", a query
// value), by its body and checksum; ok is false when there is none. A
// random string passes the 32-bit checksum once in 4 billion windows.
func Find(s string) (start, end int, ok bool) {
	run := 0 // base62 characters ending at i
	for i := 0; i < len(s); i++ {
		if !isBase62(s[i : i+1]) {
			run = 0
			continue
		}
		run++
		if run < suffixLen {
			continue
		}
		e := i + 1
		if !checksumMatches(s[e-suffixLen:e-ChecksumLen], s[e-ChecksumLen:e]) {
			continue
		}
		// Take the prefix along, as far as it goes: it is part of what
		// must not be logged.
		b := e - suffixLen
		for b > 0 && e-suffixLen-b < maxPrefixLen && isPrefixByte(s[b-1]) {
			b--
		}
		return b, e, true
	}
	return 0, 0, false
}

// Redact replaces every phantom token embedded in s with "[phantom token]".
func Redact(s string) string {
	var out strings.Builder
	for {
		b, e, ok := Find(s)
		if !ok {
			if out.Len() == 0 {
				return s
			}
			out.WriteString(s)
			return out.String()
		}
		out.WriteString(s[:b])
		out.WriteString("[phantom token]")
		s = s[e:]
	}
}

func isPrefixByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-'
}

// checksumMatches is checksum(body) == sum without big numbers: Find tries
// it at every position of a long run.
func checksumMatches(body, sum string) bool {
	var n uint64
	for i := 0; i < len(sum); i++ {
		n = n*62 + uint64(strings.IndexByte(base62Alphabet, sum[i]))
	}
	return n == uint64(crc32.ChecksumIEEE([]byte(body)))
}
