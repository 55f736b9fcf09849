package metering

import (
	"net/http"
	"strings"

	"github.com/phantomvault/phantom/internal/resolve"
)

// The endpoints metering knows how to cap and meter, per usage format.
// Under an output cap or a budget a request with a body goes only to one of
// them: anywhere else (an OpenAI-compatible path on a Gemini route, a
// legacy or batch API, a trailing slash) the cap would not be inserted or
// the usage not read. Requests without a body (listing, retrieving) pass.

// EndpointKind is what a known endpoint spends.
type EndpointKind uint8

const (
	EndpointUnknown  EndpointKind = iota // no endpoint metering knows
	EndpointGenerate                     // input and output; the answer reports both
	EndpointEmbed                        // input only
	EndpointFree                         // counts tokens: spends nothing
)

// endpoint is one known endpoint: the path's last segments, what it spends,
// and the key that carries its output cap ("" where none is inserted).
type endpoint struct {
	suffix string
	kind   EndpointKind
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
		{"/chat/completions", EndpointGenerate, "max_completion_tokens", "max_tokens"},
		{"/completions", EndpointGenerate, "max_tokens", ""},
		{"/responses", EndpointGenerate, "max_output_tokens", ""},
		{"/embeddings", EndpointEmbed, "", ""},
	},
	resolve.UsageAnthropic: {
		{"/messages", EndpointGenerate, "max_tokens", ""},
		{"/messages/count_tokens", EndpointFree, "", ""},
	},
}

// geminiMethods are the methods of .../models/{model}:{method} (also
// tunedModels/{name}); the cap goes in generationConfig (checkGeminiBody).
var geminiMethods = map[string]EndpointKind{
	"generateContent":       EndpointGenerate,
	"streamGenerateContent": EndpointGenerate,
	"countTokens":           EndpointFree,
	"embedContent":          EndpointEmbed,
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
		if i < 0 || !ok || !plainModel(model) || kind == EndpointUnknown || (prev != "models" && prev != "tunedModels") {
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

// checkEndpoint returns the kind of known endpoint the request calls and,
// under an output cap or a budget, refuses a request with a body to any
// endpoint metering cannot cap and meter (path_not_allowed: the agent may
// not use it under this token), and under a budget a batch (unmeasurable).
func checkEndpoint(method string, hasBody bool, path string, l *resolve.Limits) (EndpointKind, *Refusal) {
	if l.BudgetRemaining != nil {
		if ref := unmeasurable(method, path); ref != nil {
			return EndpointUnknown, ref
		}
	}
	if !hasBody {
		return EndpointUnknown, nil // lists and reads spend nothing
	}
	e, ok := findEndpoint(l.UsageFormat, path)
	if ok && method == http.MethodPost {
		return e.kind, nil
	}
	if l.MaxOutputTokens == 0 && l.BudgetRemaining == nil {
		return EndpointUnknown, nil
	}
	return EndpointUnknown, &Refusal{Reason: resolve.ReasonPathNotAllowed, Message: "this endpoint cannot be capped and metered under the phantom token's LLM limits: only POST to the " +
		l.UsageFormat + " API's generation, embedding and token-counting endpoints is allowed"}
}

// unmeasurable refuses, under a budget, requests that spend LLM tokens
// that cannot be measured: the batch APIs (OpenAI's and Anthropic's
// /batches, Gemini's :batchGenerateContent), whose work and usage come long
// after the request, outside it. (WebSockets, such as OpenAI's Realtime
// API, are refused by the proxy for every token.) Other endpoints that work
// in the background are for the route's allowed_paths to leave out.
func unmeasurable(method, path string) *Refusal {
	if method == http.MethodPost && (strings.HasSuffix(path, "/batches") || strings.HasSuffix(path, ":batchGenerateContent")) {
		return badRequest("the phantom token has an LLM token budget, and the usage of a batch cannot be measured: send its requests one by one")
	}
	return nil
}
