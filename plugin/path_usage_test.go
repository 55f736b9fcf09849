package plugin

import (
	"testing"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/phantomvault/phantom/internal/resolve"
)

func report(t testing.TB, e *testEnv, reports ...map[string]any) map[string]any {
	t.Helper()
	items := make([]any, len(reports))
	for i, r := range reports {
		items[i] = r
	}
	return e.ok(t, logical.PatchOperation, "usage", map[string]any{"reports": items}).Data
}

// TestUsageReportsAreChecked: each report is checked on its own; a bad one
// is rejected alone, and the call's other reports still apply. Only a call
// of the wrong shape is refused whole.
func TestUsageReportsAreChecked(t *testing.T) {
	e := getTestBackend(t)
	e.writeRoute(t, "r", llmRoute(nil))
	_, mint := e.mint(t, "r", nil)
	accessor := mint.Data["accessor"].(string)
	_, victimMint := e.mint(t, "r", nil)
	victim := victimMint.Data["accessor"].(string)
	applied := int64(0)
	for name, bad := range map[string]map[string]any{
		"negative":     {"accessor": accessor, "input_tokens": -1},
		"no accessor":  {"input_tokens": 1},
		"not whole":    {"accessor": accessor, "input_tokens": 1.5},
		"huge":         {"accessor": accessor, "output_tokens": int64(resolve.MaxReportedTokens) + 1},
		"huge settled": {"accessor": accessor, "settled": int64(resolve.MaxReportedTokens) + 1},
		"not a number": {"accessor": accessor, "input_tokens": "7"},
		"bad accessor": {"accessor": 7},
	} {
		got := report(t, e, map[string]any{"accessor": victim, "input_tokens": 7}, bad,
			map[string]any{"accessor": victim, "output_tokens": 3})
		if got["applied"] != 2 || got["rejected"] != 1 || got["unknown_accessors"] != 0 {
			t.Errorf("%s: answer %v, want 2 applied and 1 rejected", name, got)
		}
		applied += 10
	}
	rd := e.ok(t, logical.ReadOperation, "tokens/"+accessor, nil).Data
	if rd["input_tokens"] != int64(0) || rd["output_tokens"] != int64(0) {
		t.Fatalf("a rejected report applied: %v %v", rd["input_tokens"], rd["output_tokens"])
	}
	rd = e.ok(t, logical.ReadOperation, "tokens/"+victim, nil).Data
	if got := rd["input_tokens"].(int64) + rd["output_tokens"].(int64); got != applied {
		t.Fatalf("the valid reports beside a rejected one: %d tokens counted, want %d", got, applied)
	}
	// Counts up to the bound are fine.
	if got := report(t, e, map[string]any{"accessor": accessor, "output_tokens": int64(resolve.MaxReportedTokens)}); got["applied"] != 1 {
		t.Fatalf("a report at MaxReportedTokens: %v", got)
	}
	// The wrong shape refuses the whole call.
	for name, reports := range map[string]any{
		"not objects": []any{map[string]any{"accessor": victim, "input_tokens": 1}, "x"},
		"empty":       []any{},
	} {
		resp, err := e.request(t, logical.PatchOperation, "usage", map[string]any{"reports": reports})
		if err != nil || !resp.IsError() {
			t.Errorf("%s: want a 400, got %v %v", name, resp, err)
		}
	}
	if rd := e.ok(t, logical.ReadOperation, "tokens/"+victim, nil).Data; rd["input_tokens"].(int64)+rd["output_tokens"].(int64) != applied {
		t.Fatalf("a call refused whole applied a report: %v", rd)
	}
	many := make([]any, resolve.MaxReports+1)
	for i := range many {
		many[i] = map[string]any{"accessor": accessor}
	}
	e.userError(t, logical.PatchOperation, "usage", map[string]any{"reports": many}, "at most")
}
