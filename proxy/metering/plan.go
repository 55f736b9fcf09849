package metering

import (
	"net/http"

	"github.com/phantomvault/phantom/internal/resolve"
)

// Request is what the plan reads of a request: its line, not its body.
type Request struct {
	Method        string
	ContentLength int64  // -1: unknown
	Path          string // exactly as forwarded
	RawQuery      string
}

// Plan is what the limits ask of one request before it is forwarded.
type Plan struct {
	Endpoint EndpointKind // the known endpoint it calls; EndpointUnknown if none
	Meter    bool         // the answer's usage is to be read and charged
	// ReadBody: a limit applies to the body, which must be read whole and
	// given to CheckBody.
	ReadBody bool
}

// PlanFor decides what to check of a request under l, and whether to meter
// it, from everything but its body; or refuses it. Only a request with a
// body can ask a model for anything: a GET that lists models is neither
// checked nor metered.
func PlanFor(r Request, l *resolve.Limits) (Plan, *Refusal) {
	hasBody := r.Method == http.MethodPost || r.ContentLength != 0
	kind, ref := checkEndpoint(r.Method, hasBody, r.Path, l)
	if ref != nil || !hasBody {
		return Plan{}, ref
	}
	if len(l.AllowedModels) > 0 {
		if ref := checkModelTarget(r.Path, r.RawQuery, l.UsageFormat != resolve.UsageGemini); ref != nil {
			return Plan{}, ref
		}
		if l.UsageFormat == resolve.UsageGemini {
			if ref := checkGeminiPath(r.Path, l.AllowedModels); ref != nil {
				return Plan{}, ref
			}
		}
	}
	return Plan{Endpoint: kind, Meter: l.UsageFormat != "", ReadBody: needsBody(l)}, nil
}

// needsBody reports whether enforcing l requires reading the body. (A
// Gemini model is in the path: a model rule alone reads no body there.)
func needsBody(l *resolve.Limits) bool {
	models := len(l.AllowedModels) > 0 && l.UsageFormat != resolve.UsageGemini
	return models || l.MaxOutputTokens > 0 || l.BudgetRemaining != nil
}
