package plugin

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/big"
	"regexp"
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
	DefaultTokenPrefix  = "phm_"
	tokenBodyLen        = 43 // ceil(256 / log2(62))
	tokenChecksumLen    = 6  // ceil(32 / log2(62))
	tokenRandomBytes    = 32
	tokenSuffixLen      = tokenBodyLen + tokenChecksumLen
	maxTokenPrefixLen   = 32
	base62Alphabet      = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	accessorRandomBytes = 16
)

var (
	tokenPrefixRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)

	errTokenFormat   = errors.New("not a phantom token")
	errTokenChecksum = errors.New("phantom token checksum mismatch")
)

// newToken returns a fresh token with the given prefix, drawing from r.
func newToken(r io.Reader, prefix string) (string, error) {
	var raw [tokenRandomBytes]byte
	if _, err := io.ReadFull(r, raw[:]); err != nil {
		return "", fmt.Errorf("reading random bytes: %w", err)
	}
	body := base62(raw[:], tokenBodyLen)
	return prefix + body + checksum(body), nil
}

// newAccessor returns a random, non-secret handle for a token: it is what
// logs, audit records and operators use to name a token.
func newAccessor(r io.Reader) (string, error) {
	var raw [accessorRandomBytes]byte
	if _, err := io.ReadFull(r, raw[:]); err != nil {
		return "", fmt.Errorf("reading random bytes: %w", err)
	}
	return "pha_" + base62(raw[:], 22), nil
}

// CheckToken reports whether s has the shape and checksum of a phantom token
// with any valid prefix. It needs no secret, so the proxy calls it too.
func CheckToken(s string) error {
	if len(s) <= tokenSuffixLen || len(s) > tokenSuffixLen+maxTokenPrefixLen {
		return errTokenFormat
	}
	split := len(s) - tokenSuffixLen
	prefix, body, sum := s[:split], s[split:len(s)-tokenChecksumLen], s[len(s)-tokenChecksumLen:]
	if !tokenPrefixRe.MatchString(prefix) || !isBase62(body) || !isBase62(sum) {
		return errTokenFormat
	}
	if checksum(body) != sum {
		return errTokenChecksum
	}
	return nil
}

func checksum(body string) string {
	var b [4]byte
	c := crc32.ChecksumIEEE([]byte(body))
	b[0], b[1], b[2], b[3] = byte(c>>24), byte(c>>16), byte(c>>8), byte(c)
	return base62(b[:], tokenChecksumLen)
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
