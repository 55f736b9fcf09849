package scrub

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// FuzzScrubber, with any secret and body, split anywhere: the streaming
// output is what a brute-force search masks, and keeps its length. Then, with
// a key drawn from a real key alphabet (seeded by the inputs) wrapped in
// body, encoded by every encoder, at every base64 alignment, split at random
// points: no byte of the key comes out.
func FuzzScrubber(f *testing.F) {
	f.Add("sk_live_abc123", "error: bad key sk_live_abc123!", 10)
	f.Add("k3y/+=<>&", `{"k":"k3y/+=\u003c\u003e\u0026"}`, 3)
	f.Add("abc", "ababcabc", 4)
	f.Add(awsKey, "Authorization: AWS4-HMAC-SHA256 Credential=", 40)
	f.Fuzz(func(t *testing.T, secret, body string, split int) {
		rng := rand.New(rand.NewPCG(uint64(split), uint64(len(secret))<<32|uint64(len(body))))
		cuts := []int{rng.IntN(len(body) + 1), rng.IntN(len(body) + 1)}
		if secret != "" {
			g := randomGrant(rng, secret)
			s := g.scrubber()
			if split < 0 {
				split = -split
			}
			split %= len(body) + 1
			scrubAndCompare(t, s, body, []int{split, max(split, cuts[0])})
		}

		// A key of 8 to 71 characters of a real alphabet, picked by secret's bytes.
		alphabet := keyAlphabets[rng.IntN(len(keyAlphabets))]
		n := 8 + rng.IntN(64)
		var key strings.Builder
		for i := range n {
			c := byte(rng.IntN(256))
			if i < len(secret) {
				c = secret[i]
			}
			key.WriteByte(alphabet[int(c)%len(alphabet)])
		}
		g := randomGrant(rng, key.String())
		s := g.scrubber()
		body = body[:min(len(body), 256)] // each encoder's document is searched by brute force too
		at := rng.IntN(len(body) + 1)
		for _, secret := range []string{g.key, g.value()} {
			checkDocument(t, s, body[:at], secret, body[at:], []int{rng.IntN(4 * (len(body) + n)), rng.IntN(4 * (len(body) + n)), rng.IntN(4 * (len(body) + n))})
		}
	})
}
