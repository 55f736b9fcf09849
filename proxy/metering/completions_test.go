package metering

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestPrompts(t *testing.T) {
	for raw, want := range map[string]int{
		`"hi"`:                 1,
		`null`:                 1,
		`{"id":"pmpt_1"}`:      1, // the Responses API's prompt template
		`[]`:                   0,
		`["hi"]`:               1,
		`[1,2,3]`:              1, // one prompt of token ids
		`[ -1 , 2 ]`:           1,
		`[[1,2,3]]`:            1,
		`["a","b"]`:            2,
		`[[1,2],[3]]`:          2,
		`["a",[1,2]]`:          2,
		`[1,"a"]`:              2, // not token ids: one prompt each
		`[ "a" , "]" , "\"" ]`: 3,
		`[null,null]`:          2,
		`[{"x":[1,2]},3]`:      2,
		`[` + strings.Repeat(`"p",`, 29) + `"p"]`: 30,
	} {
		if got := prompts([]byte(raw)); got != want {
			t.Errorf("prompts(%s) = %d, want %d", raw, got, want)
		}
	}
}

// FuzzPrompts checks the in-place walk against a decoder: every valid JSON
// value gets the count encoding/json's reading gives.
func FuzzPrompts(f *testing.F) {
	for _, s := range []string{`"a"`, `[]`, `[1,2]`, `[[1],[2]]`, `["a","b"]`, ` [ "]" , [ "[" ] ] `, `[1,"a"]`, `[{"a":[]},-0.5e3]`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		if !json.Valid([]byte(raw)) {
			return
		}
		raw = strings.TrimSpace(raw) // as scanObject hands a member's value
		want := 1
		var list []any
		if json.Unmarshal([]byte(raw), &list) == nil && list != nil {
			want = len(list)
			ids := len(list) > 0
			for _, e := range list {
				if _, ok := e.(float64); !ok {
					ids = false
				}
			}
			if ids {
				want = 1
			}
		}
		if got := prompts([]byte(raw)); got != want {
			t.Fatalf("prompts(%s) = %d, want %d", raw, got, want)
		}
	})
}
