package metering

import "github.com/phantomvault/phantom/internal/resolve"

// oneCompletion refuses, under a cap or a budget, a request that asks for
// several completions, or for output that no cap bounds. The engine
// reserves one output cap per request, and the cap is checked once per
// request: a request for k completions may spend k caps. In the APIs the
// endpoint rule lets through (endpoint.go):
//   - n (chat and legacy completions) and best_of (legacy completions)
//     above 1;
//   - a legacy completions prompt that is a list of prompts: OpenAI answers
//     one completion per prompt, each up to max_tokens. A list of token ids
//     ([1,2,3]) is one prompt, and a list of one prompt is one; a list of
//     strings or of token lists ([[1,2],[3]]) is one prompt per element;
//   - prediction (chat's Predicted Outputs): its rejected tokens are billed
//     as output tokens, whatever max_completion_tokens says (which OpenAI
//     does not take with a prediction);
//   - Gemini's candidateCount above 1 (checkGeminiBody).
//
// Anthropic's messages and OpenAI's Responses API give one completion per
// request; batches (OpenAI's and Anthropic's /batches, Gemini's
// :batchGenerateContent) are not generation endpoints: the endpoint rule
// refuses them, and under a budget so does unmeasurable. The keys are
// watched (openAIKeys): twice, or in another case, the body is refused.
func oneCompletion(top *object) *Refusal {
	for _, k := range []string{"n", "best_of"} {
		if n, ok, err := intMember(top, k); err != nil {
			return badRequest(err.Error())
		} else if ok && n > 1 {
			return severalCompletions(k + " above 1")
		}
	}
	if m, ok := top.members["prompt"]; ok && prompts(m.raw) > 1 {
		return severalCompletions("a list of several prompts")
	}
	if m, ok := top.members["prediction"]; ok && string(m.raw) != "null" {
		return &Refusal{Reason: resolve.ReasonOutputCapExceeded, Message: "the phantom token caps the output of each request, and a prediction's rejected tokens are billed as output " +
			"beyond any cap: leave prediction out"}
	}
	return nil
}

// severalCompletions refuses a request for more than one completion: as a
// request over the cap (max_output_tokens_exceeded), saying why.
func severalCompletions(what string) *Refusal {
	return &Refusal{Reason: resolve.ReasonOutputCapExceeded, Message: "the phantom token's output cap bounds one completion per request, and " + what +
		" asks for several, each up to the cap: send one per request"}
}

// prompts is how many prompts a legacy completions prompt holds, as OpenAI
// reads it: anything but a list (a string) is one; a list of numbers is
// one prompt of token ids; any other list is one prompt per element. It
// walks the value in place (json.Valid accepted the body).
func prompts(raw []byte) int {
	if len(raw) == 0 || raw[0] != '[' {
		return 1
	}
	n, tokenIDs := 0, true
	for i := skipSpace(raw, 1); raw[i] != ']'; {
		if c := raw[i]; c != '-' && (c < '0' || c > '9') {
			tokenIDs = false
		}
		i = skipSpace(raw, skipValue(raw, i))
		n++
		if raw[i] == ',' {
			i = skipSpace(raw, i+1)
		}
	}
	if tokenIDs && n > 0 {
		return 1
	}
	return n
}
