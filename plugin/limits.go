package plugin

import (
	"errors"
	"fmt"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/phantomvault/phantom/internal/limits"
	"github.com/phantomvault/phantom/internal/resolve"
)

// Limits: what a token may cost. Routes set them (the defaults and the
// ceilings); a mint may narrow them, never widen; at resolve the route's
// current values apply as well as the token's, so lowering a route's limit
// bites at once on live tokens. The token budget is fixed at mint (the
// route's value is its default), so raising a route's budget never refills
// a live token; so is a budgeted token's output cap, which bounds what each
// of its requests reserves of the budget (budget.go). The values and their
// narrowing are internal/limits; this file is their fields and records.

// routeLimits are the limit fields of a route.
type routeLimits struct {
	RateLimit       *limits.Rate `json:"rate_limit,omitempty"`       // per token
	RouteRateLimit  *limits.Rate `json:"route_rate_limit,omitempty"` // all tokens of the route together
	TokenBudget     int64        `json:"token_budget,omitempty"`     // LLM tokens per token; mint default and ceiling
	MaxOutputTokens int64        `json:"max_output_tokens,omitempty"`
	AllowedModels   []string     `json:"allowed_models,omitempty"`
	UsageFormat     string       `json:"usage_format,omitempty"`
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
		if l.RateLimit, err = limits.ParseRate(v.(string)); err != nil {
			return fmt.Errorf("rate_limit: %w", err)
		}
	}
	if v, ok := d.GetOk("route_rate_limit"); ok {
		if l.RouteRateLimit, err = limits.ParseRate(v.(string)); err != nil {
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
		if l.AllowedModels, err = limits.ParseModels(v.([]string)); err != nil {
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
	if err := limits.ValidUsageFormat(l.UsageFormat); err != nil {
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
	RateLimit       *limits.Rate `json:"rate_limit,omitempty"`
	TokenBudget     int64        `json:"token_budget,omitempty"` // the route's at mint unless narrowed
	MaxOutputTokens int64        `json:"max_output_tokens,omitempty"`
	AllowedModels   []string     `json:"allowed_models,omitempty"`
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
		r, err := limits.ParseRate(v.(string))
		switch {
		case err != nil:
			return logical.ErrorResponse("rate_limit: %s", err)
		case r == nil:
			return emptyNarrowing("rate_limit", "limit such as 60/1m")
		case !r.Within(rl.RateLimit):
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
		models, err := limits.ParseModels(v.([]string))
		switch {
		case err != nil:
			return logical.ErrorResponse("allowed_models: %s", err)
		case len(models) == 0:
			return emptyNarrowing("allowed_models", "model pattern")
		case rl.UsageFormat == resolve.UsageNone:
			return logical.ErrorResponse("allowed_models: route %q declares no usage_format, so the proxy cannot find the model", t.Route)
		}
		for _, m := range models {
			if len(rl.AllowedModels) > 0 && !limits.ModelsWithin(m, rl.AllowedModels) {
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
	rate            *limits.Rate // per token; nil: none
	routeRate       *limits.Rate // all the route's tokens; nil: none
	budget          int64        // 0: none
	maxOutputTokens int64
	models          []string
	noModel         bool // both lists set and nothing lies within both
	usageFormat     string
}

func effective(t *tokenEntry, route *routeEntry) effectiveLimits {
	tl, rl := t.Limits.orNone(), route.Limits.orNone()
	e := effectiveLimits{
		budget:          limits.MinPositive(tl.TokenBudget, rl.TokenBudget),
		maxOutputTokens: limits.MinPositive(tl.MaxOutputTokens, rl.MaxOutputTokens),
		usageFormat:     rl.UsageFormat,
	}
	e.rate = limits.StricterRate(tl.RateLimit, rl.RateLimit)
	e.routeRate = rl.RouteRateLimit
	e.models, e.noModel = limits.EffectiveModels(tl.AllowedModels, rl.AllowedModels)
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
