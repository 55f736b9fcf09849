package plugin

import (
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/phantomvault/phantom/internal/resolve"
)

// Limits: what a token may cost. Routes set them (the defaults and the
// ceilings); a mint may narrow them, never widen; at resolve the route's
// current values apply as well as the token's, so lowering a route's limit
// bites at once on live tokens. The token budget is fixed at mint (the
// route's value is its default), so raising a route's budget never refills
// a live token; so is a budgeted token's output cap, which bounds what each
// of its requests reserves of the budget (budget.go).

// Rate limit bounds: a period from 1 s to 24 h, at most a billion requests.
const (
	minRatePeriod = time.Second
	maxRatePeriod = 24 * time.Hour
	maxRateCount  = 1_000_000_000
)

// rateLimit is "N requests per Period", enforced as GCRA (ratelimit.go):
// bursts of up to N, refilled at N per Period.
type rateLimit struct {
	N      int64         `json:"n"`
	Period time.Duration `json:"period"`
}

// parseRateLimit parses "N/DURATION" (60/1m, 10/1s, 1000/1h); "" and "0"
// are no limit (nil).
func parseRateLimit(s string) (*rateLimit, error) {
	s = strings.TrimSpace(s)
	if s == "" || s == "0" {
		return nil, nil
	}
	count, period, ok := strings.Cut(s, "/")
	if !ok {
		return nil, fmt.Errorf("%q is not N/DURATION (for example 60/1m)", s)
	}
	n, err := strconv.ParseInt(strings.TrimSpace(count), 10, 64)
	if err != nil || n < 1 || n > maxRateCount {
		return nil, fmt.Errorf("%q: N must be a whole number from 1 to %d", s, maxRateCount)
	}
	p, err := parsePeriod(strings.TrimSpace(period))
	if err != nil || p < minRatePeriod || p > maxRatePeriod {
		return nil, fmt.Errorf("%q: the duration must be from 1s to 24h (for example 1m)", s)
	}
	return &rateLimit{N: n, Period: p}, nil
}

// parsePeriod reads a Go duration (1m, 1h30m) or, as Vault does, a bare
// number of seconds.
func parsePeriod(s string) (time.Duration, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil && n > 0 && n <= int64(maxRatePeriod/time.Second) {
		return time.Duration(n) * time.Second, nil
	}
	return time.ParseDuration(s)
}

func (r *rateLimit) String() string {
	if r == nil {
		return ""
	}
	return strconv.FormatInt(r.N, 10) + "/" + formatPeriod(r.Period)
}

// formatPeriod writes a period the way an admin would: 1m, not 1m0s.
func formatPeriod(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// interval is GCRA's emission interval: Period/N, rounded up so the long-run
// rate never exceeds N per Period.
func (r *rateLimit) interval() time.Duration {
	return (r.Period + time.Duration(r.N) - 1) / time.Duration(r.N)
}

// within reports whether r is at most as permissive as wide: no higher a
// rate (N/Period) and no larger a burst (N).
func (r *rateLimit) within(wide *rateLimit) bool {
	if wide == nil {
		return true
	}
	if r == nil {
		return false
	}
	// r.N/r.Period <= wide.N/wide.Period, exactly, in 128 bits.
	lh, ll := bits.Mul64(uint64(r.N), uint64(wide.Period))
	rh, rl := bits.Mul64(uint64(wide.N), uint64(r.Period))
	rateOK := lh < rh || lh == rh && ll <= rl
	return rateOK && r.N <= wide.N
}

// stricterRate is one limit at least as strict as both a and b (nil:
// none): the stricter one when one lies within the other, else the longer
// emission interval with the smaller burst. Any sequence of requests it
// admits, both admit.
func stricterRate(a, b *rateLimit) *rateLimit {
	switch {
	case a == nil:
		return b
	case b == nil || a.within(b):
		return a
	case b.within(a):
		return b
	}
	n := min(a.N, b.N)
	return &rateLimit{N: n, Period: max(a.interval(), b.interval()) * time.Duration(n)}
}

// minPositive is the stricter of two limits where 0 means none.
func minPositive(a, b int64) int64 {
	switch {
	case a <= 0:
		return max(b, 0)
	case b <= 0:
		return a
	}
	return min(a, b)
}

// validUsageFormat checks a route's usage_format.
func validUsageFormat(f string) error {
	if f == resolve.UsageNone || slices.Contains(resolve.UsageFormats, f) {
		return nil
	}
	return fmt.Errorf("usage_format must be one of %s, or empty (got %q)", strings.Join(resolve.UsageFormats, ", "), f)
}

// parseModels cleans and checks an allowed_models list.
func parseModels(in []string) ([]string, error) {
	out := cleanList(in)
	for _, p := range out {
		if err := resolve.ValidModelPattern(p); err != nil {
			return nil, err
		}
	}
	return slices.Compact(out), nil
}

// modelWithin reports whether every model narrow matches, wide matches too:
// wide matches narrow read as a literal string. Sound: a '*' of narrow is
// then a character that only a '*' of wide can consume, and that '*' would
// consume whatever narrow's '*' stands for.
func modelWithin(narrow, wide string) bool { return resolve.MatchModel(wide, narrow) }

func modelsWithin(narrow string, wide []string) bool {
	return slices.ContainsFunc(wide, func(w string) bool { return modelWithin(narrow, w) })
}

// effectiveModels is the model allow-list of a request: every pattern of one
// list that lies within the other list. When the token's list was narrowed
// at mint (the usual case) it is the token's list; when the route was
// narrowed since, it keeps only what both allow. An empty result while
// either list is set means no model is allowed (the caller refuses).
func effectiveModels(token, route []string) (models []string, none bool) {
	switch {
	case len(token) == 0:
		return route, false
	case len(route) == 0:
		return token, false
	}
	all := true
	for _, p := range token {
		if !modelsWithin(p, route) {
			all = false
			break
		}
	}
	if all {
		return token, false
	}
	for _, p := range token {
		if modelsWithin(p, route) {
			models = append(models, p)
		}
	}
	for _, p := range route {
		if modelsWithin(p, token) && !slices.Contains(models, p) {
			models = append(models, p)
		}
	}
	return models, len(models) == 0
}

// routeLimits are the limit fields of a route.
type routeLimits struct {
	RateLimit       *rateLimit `json:"rate_limit,omitempty"`       // per token
	RouteRateLimit  *rateLimit `json:"route_rate_limit,omitempty"` // all tokens of the route together
	TokenBudget     int64      `json:"token_budget,omitempty"`     // LLM tokens per token; mint default and ceiling
	MaxOutputTokens int64      `json:"max_output_tokens,omitempty"`
	AllowedModels   []string   `json:"allowed_models,omitempty"`
	UsageFormat     string     `json:"usage_format,omitempty"`
}

// any reports whether the route sets a limit or declares a usage format.
// Routes without limits have none (nil), stored before limits existed or not.
func (l *routeLimits) any() bool {
	return l != nil && (l.RateLimit != nil || l.RouteRateLimit != nil || l.TokenBudget > 0 || l.MaxOutputTokens > 0 ||
		len(l.AllowedModels) > 0 || l.UsageFormat != "")
}

// orNone returns l, or the limits of a route without any.
func (l *routeLimits) orNone() *routeLimits {
	if l == nil {
		return &routeLimits{}
	}
	return l
}

// limitFields are the route fields of routeLimits.
func limitFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		"rate_limit": {
			Type:        framework.TypeString,
			Description: "Requests per token, as N/DURATION: 60/1m, 10/1s, 1000/1h (N from 1, duration from 1s to 24h). Bursts of up to N, refilled at N per duration. Empty or 0: none. Over it the agent gets 429 with Retry-After. A mint may ask for less, never more.",
		},
		"route_rate_limit": {
			Type:        framework.TypeString,
			Description: "Requests per route, all its tokens together, as N/DURATION (protects the upstream's own quota). Empty or 0: none.",
		},
		"token_budget": {
			Type:        framework.TypeInt64,
			Description: "LLM tokens (input + output, as the upstream reports them) each token may spend; then it is dead (budget_exhausted). The default for mints and their ceiling. 0: none. Needs usage_format and max_output_tokens: each request in flight reserves its cap of the budget until its usage is reported.",
		},
		"max_output_tokens": {
			Type:        framework.TypeInt64,
			Description: "Most output tokens one request may ask for (the proxy refuses larger requests, and bounds what a request in flight can spend). 0: none. A mint may ask for less. Needs usage_format. Required with token_budget.",
		},
		"allowed_models": {
			Type:        framework.TypeCommaStringSlice,
			Description: "Models tokens may use, as globs where * is any run of characters: gpt-4o-mini,claude-3-5-haiku-*. Empty: any. A mint may narrow it. Needs usage_format (it says where the request names its model).",
		},
		"usage_format": {
			Type:          framework.TypeString,
			Description:   "How the upstream reports LLM token usage, for budgets and accounting: openai, anthropic or gemini. Empty: not an LLM API.",
			AllowedValues: []any{resolve.UsageNone, resolve.UsageOpenAI, resolve.UsageAnthropic, resolve.UsageGemini},
		},
	}
}

// setLimits applies the limit fields of a route write to r; a route without
// any keeps none (nil), so that resolve copies no more of it than before.
func (r *routeEntry) setLimits(d *framework.FieldData) error {
	l := *r.Limits.orNone() // a copy: r may share its limits with the stored route
	if err := l.set(d); err != nil {
		return err
	}
	r.Limits = nil
	if l.any() {
		r.Limits = &l
	}
	return nil
}

func (l *routeLimits) set(d *framework.FieldData) error {
	var err error
	if v, ok := d.GetOk("rate_limit"); ok {
		if l.RateLimit, err = parseRateLimit(v.(string)); err != nil {
			return fmt.Errorf("rate_limit: %w", err)
		}
	}
	if v, ok := d.GetOk("route_rate_limit"); ok {
		if l.RouteRateLimit, err = parseRateLimit(v.(string)); err != nil {
			return fmt.Errorf("route_rate_limit: %w", err)
		}
	}
	if v, ok := d.GetOk("token_budget"); ok {
		l.TokenBudget = v.(int64)
	}
	if v, ok := d.GetOk("max_output_tokens"); ok {
		l.MaxOutputTokens = v.(int64)
	}
	if v, ok := d.GetOk("allowed_models"); ok {
		if l.AllowedModels, err = parseModels(v.([]string)); err != nil {
			return fmt.Errorf("allowed_models: %w", err)
		}
	}
	if v, ok := d.GetOk("usage_format"); ok {
		l.UsageFormat = strings.TrimSpace(v.(string))
	}
	return nil
}

// validate checks a route's limits as a whole.
func (l *routeLimits) validate() error {
	if l == nil {
		return nil
	}
	if err := validUsageFormat(l.UsageFormat); err != nil {
		return err
	}
	if l.TokenBudget < 0 || l.MaxOutputTokens < 0 {
		return errors.New("token_budget and max_output_tokens must not be negative")
	}
	// A limit the proxy cannot measure or find would be a lie.
	if l.UsageFormat == resolve.UsageNone {
		var need []string
		if l.TokenBudget > 0 {
			need = append(need, "token_budget")
		}
		if l.MaxOutputTokens > 0 {
			need = append(need, "max_output_tokens")
		}
		if len(l.AllowedModels) > 0 {
			need = append(need, "allowed_models")
		}
		if len(need) > 0 {
			return fmt.Errorf("%s needs usage_format (one of %s): without it the proxy can neither measure usage nor find the model",
				strings.Join(need, ", "), strings.Join(resolve.UsageFormats, ", "))
		}
	}
	if l.TokenBudget > 0 && l.MaxOutputTokens == 0 {
		return errBudgetNeedsCap
	}
	return nil
}

// errBudgetNeedsCap: each request under a budget reserves its output cap
// until its usage is in (budget.go); without a cap there is nothing to
// reserve, and no bound on what the requests in flight can spend.
var errBudgetNeedsCap = errors.New("token_budget needs max_output_tokens: a budget without a per-request cap has no bound on what one request can spend")

// data is what a route read shows of its limits.
func (l *routeLimits) data(d map[string]any) {
	l = l.orNone()
	d["rate_limit"] = l.RateLimit.String()
	d["route_rate_limit"] = l.RouteRateLimit.String()
	d["token_budget"] = l.TokenBudget
	d["max_output_tokens"] = l.MaxOutputTokens
	d["allowed_models"] = nonNil(l.AllowedModels)
	d["usage_format"] = l.UsageFormat
}

// tokenLimits are the limits a mint fixed on a token; zero values mean the
// route's.
type tokenLimits struct {
	RateLimit       *rateLimit `json:"rate_limit,omitempty"`
	TokenBudget     int64      `json:"token_budget,omitempty"` // the route's at mint unless narrowed
	MaxOutputTokens int64      `json:"max_output_tokens,omitempty"`
	AllowedModels   []string   `json:"allowed_models,omitempty"`
}

func (l *tokenLimits) any() bool {
	return l != nil && (l.RateLimit != nil || l.TokenBudget > 0 || l.MaxOutputTokens > 0 || len(l.AllowedModels) > 0)
}

func (l *tokenLimits) orNone() *tokenLimits {
	if l == nil {
		return &tokenLimits{}
	}
	return l
}

// mintFields are the mint fields of tokenLimits.
func mintLimitFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		"rate_limit": {
			Type:        framework.TypeString,
			Description: "A lower per-token rate limit than the route's, as N/DURATION: no higher a rate and no larger a burst N.",
		},
		"token_budget": {
			Type:        framework.TypeInt64,
			Description: "LLM tokens (input + output) this token may spend, at most the route's token_budget. Default: the route's. Needs max_output_tokens, the route's or this mint's.",
		},
		"max_output_tokens": {
			Type:        framework.TypeInt64,
			Description: "Most output tokens one request may ask for, at most the route's max_output_tokens.",
		},
		"allowed_models": {
			Type:        framework.TypeCommaStringSlice,
			Description: "Narrower model globs than the route's; each must lie within one of the route's.",
		},
	}
}

// narrowLimits applies a mint's limits to t, refusing anything wider than
// the route's (and, like every narrowing parameter, anything given empty).
func narrowLimits(t *tokenEntry, route *routeEntry, d *framework.FieldData) *logical.Response {
	rl := route.Limits.orNone()
	var tl tokenLimits
	defer func() {
		if tl.any() {
			t.Limits = &tl
		}
	}()
	tl.TokenBudget = rl.TokenBudget
	if v, ok := d.GetOk("rate_limit"); ok {
		r, err := parseRateLimit(v.(string))
		switch {
		case err != nil:
			return logical.ErrorResponse("rate_limit: %s", err)
		case r == nil:
			return emptyNarrowing("rate_limit", "limit such as 60/1m")
		case !r.within(rl.RateLimit):
			return logical.ErrorResponse("rate_limit: %s is wider than the route allows (%s): a mint may lower the rate and the burst, never raise them", r, rl.RateLimit)
		}
		tl.RateLimit = r
	}
	if v, ok := d.GetOk("token_budget"); ok {
		n := v.(int64)
		switch {
		case n < 0:
			return logical.ErrorResponse("token_budget must not be negative")
		case n == 0:
			return emptyNarrowing("token_budget", "positive budget")
		case rl.UsageFormat == resolve.UsageNone:
			return logical.ErrorResponse("token_budget: route %q declares no usage_format, so no budget can be measured", t.Route)
		case rl.TokenBudget > 0 && n > rl.TokenBudget:
			return logical.ErrorResponse("token_budget: %d is wider than the route allows (%d)", n, rl.TokenBudget)
		}
		tl.TokenBudget = n
	}
	if v, ok := d.GetOk("max_output_tokens"); ok {
		n := v.(int64)
		switch {
		case n < 0:
			return logical.ErrorResponse("max_output_tokens must not be negative")
		case n == 0:
			return emptyNarrowing("max_output_tokens", "positive cap")
		case rl.UsageFormat == resolve.UsageNone:
			return logical.ErrorResponse("max_output_tokens: route %q declares no usage_format, so no cap can be enforced", t.Route)
		case rl.MaxOutputTokens > 0 && n > rl.MaxOutputTokens:
			return logical.ErrorResponse("max_output_tokens: %d is wider than the route allows (%d)", n, rl.MaxOutputTokens)
		}
		tl.MaxOutputTokens = n
	}
	if v, ok := d.GetOk("allowed_models"); ok {
		models, err := parseModels(v.([]string))
		switch {
		case err != nil:
			return logical.ErrorResponse("allowed_models: %s", err)
		case len(models) == 0:
			return emptyNarrowing("allowed_models", "model pattern")
		case rl.UsageFormat == resolve.UsageNone:
			return logical.ErrorResponse("allowed_models: route %q declares no usage_format, so the proxy cannot find the model", t.Route)
		}
		for _, m := range models {
			if len(rl.AllowedModels) > 0 && !modelsWithin(m, rl.AllowedModels) {
				return logical.ErrorResponse("allowed_models: %q is wider than the route allows (%s)", m, strings.Join(rl.AllowedModels, ", "))
			}
		}
		tl.AllowedModels = models
	}
	if tl.TokenBudget > 0 && tl.MaxOutputTokens == 0 {
		if rl.MaxOutputTokens == 0 {
			return logical.ErrorResponse("%s: route %q has no max_output_tokens, so give one with this mint", errBudgetNeedsCap, t.Route)
		}
		// Fixed at mint like the budget it bounds: the route can lower
		// it later (effective), never remove it.
		tl.MaxOutputTokens = rl.MaxOutputTokens
	}
	return nil
}

// effectiveLimits are the limits that apply to one token's requests now:
// the stricter of the token's and its route's current values.
type effectiveLimits struct {
	rate            *rateLimit // per token; nil: none
	routeRate       *rateLimit // all the route's tokens; nil: none
	budget          int64      // 0: none
	maxOutputTokens int64
	models          []string
	noModel         bool // both lists set and nothing lies within both
	usageFormat     string
}

func effective(t *tokenEntry, route *routeEntry) effectiveLimits {
	tl, rl := t.Limits.orNone(), route.Limits.orNone()
	e := effectiveLimits{
		budget:          minPositive(tl.TokenBudget, rl.TokenBudget),
		maxOutputTokens: minPositive(tl.MaxOutputTokens, rl.MaxOutputTokens),
		usageFormat:     rl.UsageFormat,
	}
	e.rate = stricterRate(tl.RateLimit, rl.RateLimit)
	e.routeRate = rl.RouteRateLimit
	e.models, e.noModel = effectiveModels(tl.AllowedModels, rl.AllowedModels)
	return e
}

// answer is what an allowed answer hands the proxy, but for what is left
// of a budget (admitBudget decides it); nil when nothing.
func (e *effectiveLimits) answer() *resolve.Limits {
	l := &resolve.Limits{UsageFormat: e.usageFormat, AllowedModels: e.models, MaxOutputTokens: e.maxOutputTokens}
	if e.budget <= 0 && l.Empty() {
		return nil
	}
	return l
}
