package resolve

import (
	"fmt"
	"strings"
)

// Usage formats: how an upstream reports the LLM tokens a request used
// (Limits.UsageFormat). None means the route is not an LLM API.
const (
	UsageNone      = ""
	UsageOpenAI    = "openai"    // chat completions, completions, embeddings, Responses
	UsageAnthropic = "anthropic" // messages
	UsageGemini    = "gemini"    // generateContent, streamGenerateContent
)

// UsageFormats lists the usage formats a route may declare.
var UsageFormats = []string{UsageOpenAI, UsageAnthropic, UsageGemini}

// Limits is what an allowed answer hands the proxy to enforce on this one
// request, decided by the engine from the token and its route: the proxy
// enforces exactly these and caches none of them.
type Limits struct {
	// UsageFormat is how to read the usage the upstream reports; the proxy
	// reports it back (UsageReport) when it is set.
	UsageFormat string `json:"usage_format,omitempty"`
	// AllowedModels are globs (MatchModel) the request's model must match;
	// empty means any model.
	AllowedModels []string `json:"allowed_models,omitempty"`
	// MaxOutputTokens caps the output tokens the request may ask for; 0 is
	// no cap.
	MaxOutputTokens int64 `json:"max_output_tokens,omitempty"`
	// BudgetRemaining is what is left of the token's LLM token budget when
	// one applies (never negative: a spent budget is a denial), nil when
	// none does. A request under a budget must be measurable.
	BudgetRemaining *int64 `json:"budget_remaining,omitempty"`
}

// Empty reports whether l asks nothing of the proxy.
func (l *Limits) Empty() bool {
	return l == nil || (l.UsageFormat == "" && len(l.AllowedModels) == 0 && l.MaxOutputTokens == 0 && l.BudgetRemaining == nil)
}

// Data is l as the engine returns it.
func (l *Limits) Data() map[string]any {
	d := make(map[string]any, 4)
	if l.UsageFormat != "" {
		d["usage_format"] = l.UsageFormat
	}
	if len(l.AllowedModels) > 0 {
		d["allowed_models"] = l.AllowedModels
	}
	if l.MaxOutputTokens != 0 {
		d["max_output_tokens"] = l.MaxOutputTokens
	}
	if l.BudgetRemaining != nil {
		d["budget_remaining"] = *l.BudgetRemaining
	}
	return d
}

// MatchModel reports whether model matches pattern, where '*' stands for
// any run of characters (model names have no segments) and every other
// character, case included, must match exactly.
func MatchModel(pattern, model string) bool { return MatchGlob(pattern, model) }

// MatchGlob reports whether s matches pattern, where '*' stands for any run
// of characters and every other character, case included, must match
// exactly: model names and API operations, which have no segments.
//
// s comes from the agent, so the match must not backtrack exponentially:
// this is the greedy matcher that keeps only the last star (a later star
// can take over whatever an earlier one would have taken),
// O(len(pattern) * len(s)) at worst.
func MatchGlob(pattern, s string) bool {
	p, m := 0, 0
	star, resume := -1, 0 // the last star seen, and where its run ends now
	for m < len(s) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, resume = p, m
			p++
		case p < len(pattern) && pattern[p] == s[m]:
			p++
			m++
		case star >= 0: // let the last star take one more character
			resume++
			p, m = star+1, resume
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// ModelAllowed reports whether model matches one of patterns; with no
// patterns every model is allowed.
func ModelAllowed(patterns []string, model string) bool {
	if len(patterns) == 0 {
		return true
	}
	for _, p := range patterns {
		if MatchModel(p, model) {
			return true
		}
	}
	return false
}

// ValidModelPattern checks a model glob as a route or a mint gives it.
func ValidModelPattern(p string) error {
	if p == "" || len(p) > 256 {
		return fmt.Errorf("model pattern %q must be 1 to 256 characters", p)
	}
	for _, c := range p {
		if c <= ' ' || c == 0x7f || c == '"' || c == '\\' {
			return fmt.Errorf("model pattern %q has a space, control character, quote or backslash", p)
		}
	}
	if strings.Contains(p, "**") {
		return fmt.Errorf("model pattern %q: '**' means nothing more than '*'", p)
	}
	return nil
}

// Field names of a usage report call (the engine's "usage" path).
const FieldReports = "reports"

// MaxReports bounds the reports one usage call may carry.
const MaxReports = 1024

// UsageReport is what the proxy measured of one token's requests since its
// last report: LLM tokens as the upstream reported them, and the responses
// whose usage could not be read, which the proxy charged at the request's
// output cap (Estimated counts them; their charge is in OutputTokens).
//
// Settled counts the requests this report closes among those admitted under
// a budget (an answer with BudgetRemaining): the engine reserves each such
// request's output cap at resolve and holds it until the proxy settles the
// request, exactly once, whatever became of it (forwarded and charged,
// refused by the proxy, failed upstream). Reserved budget is what keeps a
// token from spending, between its requests' usage and the reports of it,
// more than the requests in flight.
type UsageReport struct {
	Accessor     string `json:"accessor"`
	InputTokens  int64  `json:"input_tokens"`
	OutputTokens int64  `json:"output_tokens"`
	Estimated    int64  `json:"estimated,omitempty"`
	Settled      int64  `json:"settled,omitempty"`
}

// MaxReportedTokens bounds each count of a report: no real usage comes near
// it, and sums of clamped counts cannot overflow.
const MaxReportedTokens = 1 << 40

// UsageBatch is one usage call: at most MaxReports reports.
type UsageBatch struct {
	Reports []UsageReport `json:"reports"`
}

// Check validates a report as the engine receives it.
func (r *UsageReport) Check() error {
	if r.Accessor == "" {
		return fmt.Errorf("a usage report lacks the accessor")
	}
	for _, n := range []int64{r.InputTokens, r.OutputTokens, r.Estimated, r.Settled} {
		if n < 0 || n > MaxReportedTokens {
			return fmt.Errorf("a usage report has a count below 0 or above %d", int64(MaxReportedTokens))
		}
	}
	return nil
}
