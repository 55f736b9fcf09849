package resolve

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestMatchModelIsLinear: a model name is the agent's to choose; a pattern
// with many stars must not make matching it exponential.
func TestMatchModelIsLinear(t *testing.T) {
	start := time.Now()
	if MatchModel("*-*-*-*-*-*-*-*-x", strings.Repeat("-", 20000)) {
		t.Fatal("matched without the final x")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("matching took %v", d)
	}
}

// TestMatchModelAgreesWithRegexp checks MatchModel against the regexp that
// means the same, on random patterns and models over a small alphabet.
func TestMatchModelAgreesWithRegexp(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	word := func(alphabet string, n int) string {
		b := make([]byte, r.IntN(n))
		for i := range b {
			b[i] = alphabet[r.IntN(len(alphabet))]
		}
		return string(b)
	}
	for range 20000 {
		pattern, model := word("ab-*", 8), word("ab-", 10)
		re := regexp.MustCompile("^" + strings.ReplaceAll(regexp.QuoteMeta(pattern), `\*`, ".*") + "$")
		if got, want := MatchModel(pattern, model), re.MatchString(model); got != want {
			t.Fatalf("MatchModel(%q, %q) = %v, want %v", pattern, model, got, want)
		}
	}
}
