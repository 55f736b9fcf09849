package metering

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/phantomvault/phantom/internal/resolve"
)

func BenchmarkCheckLimitedBody8MiB(b *testing.B) {
	body := []byte(`{"model":"gpt-4o","messages":[{"role":"user","content":"` + strings.Repeat("x", 8<<20) + `"}]}`)
	l := &resolve.Limits{UsageFormat: resolve.UsageOpenAI, AllowedModels: []string{"gpt-4o"}, MaxOutputTokens: 100}
	buf := make([]byte, len(body), len(body)+EditRoom)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		copy(buf, body)
		if _, ref := CheckBody(buf[:len(body)], l, "/v1/chat/completions"); ref != nil {
			b.Fatal(ref.Message)
		}
	}
}

// A body the checks pass on is still one JSON object after any rewrite,
// with the same members as before plus those inserted.
func FuzzCheckLimitedBody(f *testing.F) {
	f.Add(`{"model":"m","stream":true}`, "/v1/chat/completions")
	f.Add(`{"generationConfig":{"temperature":1}}`, "/v1/models/g:generateContent")
	f.Add(`{ }`, "/v1/messages")
	for _, s := range scanSeeds {
		f.Add(s, "/v1/chat/completions")
	}
	f.Fuzz(func(t *testing.T, body, path string) {
		checkScanAgainstJSON(t, []byte(body)) // jsonscan_test.go: the scanner reads what encoding/json reads
		for _, format := range resolve.UsageFormats {
			l := &resolve.Limits{UsageFormat: format, MaxOutputTokens: 100, BudgetRemaining: new(int64(5))}
			got, ref := CheckBody([]byte(body), l, path)
			if ref != nil || !got.Edited {
				continue
			}
			var before, after map[string]json.RawMessage // raw: 1e700 is JSON, not a float64
			if err := json.Unmarshal(got.Forward, &after); err != nil {
				t.Fatalf("%s: rewrote %q into %q: %v", format, body, got.Forward, err)
			}
			json.Unmarshal([]byte(body), &before)
			for k := range before {
				if _, ok := after[k]; !ok {
					t.Fatalf("%s: rewriting %q lost %q", format, body, k)
				}
			}
		}
	})
}

var scanSeeds = []string{
	`{"model":"m","stream":true}`,
	`{"mod\u0065l":"x","MODEL":1}`,
	` { "n" : 2 , "best_of":[1,{"n":3}] , "x":"\"}\\" } `,
	`{"max_to\u212aens":1}`,
	`{"a":"\ud83d\ude00","stream_options":{"include_usage":true}}`,
	`{"model":"m"}{"model":"o"}`,
	"{\"model\":\"\xff\"}",
	`{"generationConfig":{"maxOutputTokens":5},"generation_config":null}`,
	`[{"model":"m"}]`,
	`{}`,
	`{"n":1e400,"max_tokens":-0}`,
}
