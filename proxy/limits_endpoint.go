package proxy

import (
	"net/http"
	"strings"

	"github.com/phantomvault/phantom/internal/resolve"
)

// The endpoints the proxy knows how to cap and meter, per usage format.
// Under an output cap or a budget a request with a body goes only to one of
// them: anywhere else (an OpenAI-compatible path on a Gemini route, a
// legacy or batch API, a trailing slash) the cap would not be inserted or
// the usage not read. Requests without a body (listing, retrieving) pass.

// endpointKind is what a known endpoint spends.
type endpointKind uint8

const (
	endpointUnknown  endpointKind = iota
	endpointGenerate              // input and output; the answer reports both
	endpointEmbed                 // input only
	endpointFree                  // counts tokens: spends nothing
)

// endpoint is one known endpoint: the path's last segments, what it spends,
// and the key that carries its output cap ("" where none is inserted).
type endpoint struct {
	suffix string
	kind   endpointKind
	capKey string
	// alsoCaps is another key the endpoint takes as its output cap (chat's
	// older max_tokens), "" where none. A request that gives capKey or
	// alsoCaps gets no cap inserted; one that gives only a key its
	// endpoint does not read (max_output_tokens to chat, or
	// max_completion_tokens to legacy completions, which an
	// OpenAI-compatible server may ignore) gets capKey inserted all the
	// same, or the cap would bound nothing.
	alsoCaps string
}

// Checked in order: the first whose suffix ends the path wins.
//   - OpenAI chat completions: max_completion_tokens, the current name,
//     which every OpenAI model takes and reasoning models require (they
//     refuse max_tokens); a compatible server that knows only max_tokens
//     works when the agent sends max_tokens itself. Responses:
//     max_output_tokens; legacy completions: max_tokens.
//   - Anthropic messages: max_tokens (which the API requires anyway).
var endpoints = map[string][]endpoint{
	resolve.UsageOpenAI: {
		{"/chat/completions", endpointGenerate, "max_completion_tokens", "max_tokens"},
		{"/completions", endpointGenerate, "max_tokens", ""},
		{"/responses", endpointGenerate, "max_output_tokens", ""},
		{"/embeddings", endpointEmbed, "", ""},
	},
	resolve.UsageAnthropic: {
		{"/messages", endpointGenerate, "max_tokens", ""},
		{"/messages/count_tokens", endpointFree, "", ""},
	},
}

// geminiMethods are the methods of .../models/{model}:{method} (also
// tunedModels/{name}); the cap goes in generationConfig (checkGeminiBody).
var geminiMethods = map[string]endpointKind{
	"generateContent":       endpointGenerate,
	"streamGenerateContent": endpointGenerate,
	"countTokens":           endpointFree,
	"embedContent":          endpointEmbed,
}

// findEndpoint returns the known endpoint a POST to path calls under
// format, matched on the path exactly as forwarded.
func findEndpoint(format, path string) (endpoint, bool) {
	if format == resolve.UsageGemini {
		i := strings.LastIndexByte(path, '/')
		prev := path[:max(i, 0)]
		prev = prev[strings.LastIndexByte(prev, '/')+1:]
		model, method, ok := strings.Cut(path[i+1:], ":")
		kind := geminiMethods[method]
		if i < 0 || !ok || !plainModel(model) || kind == endpointUnknown || (prev != "models" && prev != "tunedModels") {
			return endpoint{}, false
		}
		return endpoint{kind: kind}, true
	}
	for _, e := range endpoints[format] {
		if strings.HasSuffix(path, e.suffix) {
			return e, true
		}
	}
	return endpoint{}, false
}

// plainModel reports whether a Gemini path's model segment is letters,
// digits and ._- only: an escaped ':' or '/' could make the upstream read
// another method than the one checked.
func plainModel(m string) bool {
	if m == "" {
		return false
	}
	for i := 0; i < len(m); i++ {
		c := m[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// checkEndpoint notes what kind of endpoint the request calls and, under an
// output cap or a budget, refuses a request with a body to any endpoint the
// proxy cannot cap and meter (403 path_not_allowed: the agent may not use
// it under this token), and under a budget a batch (unmeasurable).
func checkEndpoint(r *http.Request, ex *exchange) *refusal {
	l := ex.grant.Limits
	if l.BudgetRemaining != nil {
		if ref := unmeasurable(r, ex.path); ref != nil { // limits.go
			return ref
		}
	}
	if r.Method != http.MethodPost && r.ContentLength == 0 {
		return nil // no body: lists and reads spend nothing
	}
	e, ok := findEndpoint(l.UsageFormat, ex.path)
	if ok && r.Method == http.MethodPost {
		ex.endpoint = e.kind
		return nil
	}
	if l.MaxOutputTokens == 0 && l.BudgetRemaining == nil {
		return nil
	}
	return refusalWith(resolve.ReasonPathNotAllowed, "this endpoint cannot be capped and metered under the phantom token's LLM limits: only POST to the "+
		l.UsageFormat+" API's generation, embedding and token-counting endpoints is allowed")
}
