package limits

import (
	"fmt"
	"slices"
	"strings"

	"github.com/phantomvault/phantom/internal/resolve"
)

// ValidUsageFormat checks a route's usage_format.
func ValidUsageFormat(f string) error {
	if f == resolve.UsageNone || slices.Contains(resolve.UsageFormats, f) {
		return nil
	}
	return fmt.Errorf("usage_format must be one of %s, or empty (got %q)", strings.Join(resolve.UsageFormats, ", "), f)
}

// ParseModels trims an allowed_models list, drops empty entries and checks each pattern.
func ParseModels(in []string) ([]string, error) {
	out := make([]string, 0, len(in))
	for _, p := range in {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		if err := resolve.ValidModelPattern(p); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return slices.Compact(out), nil
}

// ModelWithin reports whether every model narrow matches, wide matches too.
func ModelWithin(narrow, wide string) bool {
	// wide matches narrow read as a literal string. Sound: a '*' of narrow
	// is then a character that only a '*' of wide can consume, and that '*'
	// would consume whatever narrow's '*' stands for.
	return resolve.MatchModel(wide, narrow)
}

// ModelsWithin reports whether narrow lies within one of wide.
func ModelsWithin(narrow string, wide []string) bool {
	return slices.ContainsFunc(wide, func(w string) bool { return ModelWithin(narrow, w) })
}

// EffectiveModels is a request's model allow-list from the token's and the route's; none means no model is allowed.
func EffectiveModels(token, route []string) (models []string, none bool) {
	// Every pattern of one list that lies within the other list. When the
	// token's list was narrowed at mint (the usual case) it is the token's
	// list; when the route was narrowed since, it keeps only what both
	// allow. An empty result while either list is set means no model.
	switch {
	case len(token) == 0:
		return route, false
	case len(route) == 0:
		return token, false
	}
	all := true
	for _, p := range token {
		if !ModelsWithin(p, route) {
			all = false
			break
		}
	}
	if all {
		return token, false
	}
	for _, p := range token {
		if ModelsWithin(p, route) {
			models = append(models, p)
		}
	}
	for _, p := range route {
		if ModelsWithin(p, token) && !slices.Contains(models, p) {
			models = append(models, p)
		}
	}
	return models, len(models) == 0
}
