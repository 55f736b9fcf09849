package metering

import (
	"encoding/json"

	"github.com/phantomvault/phantom/internal/resolve"
)

// Where each API reports usage (input, output):
//   - OpenAI chat completions and completions: usage.prompt_tokens and
//     usage.completion_tokens, in the body or in a stream's last chunk (with
//     stream_options.include_usage); Responses: usage.input_tokens and
//     usage.output_tokens, in the body or in the response.completed event's
//     response.usage. Cached and reasoning tokens are already inside these.
//   - Anthropic messages: usage.input_tokens + cache_creation_input_tokens +
//     cache_read_input_tokens (all of them are input the model read), and
//     usage.output_tokens; a stream gives input in message_start's
//     message.usage and the running output total in each message_delta's
//     usage: the last one is the total.
//   - Gemini: usageMetadata.promptTokenCount + toolUsePromptTokenCount, and
//     candidatesTokenCount + thoughtsTokenCount; every chunk of a stream
//     carries running totals: the last one counts.
//
// Usage counts only when the body was read to its end (Tap): a stream cut
// short carries running totals, not what the request spent.

// maxUsageObject bounds the bytes of one usage object the scanner keeps.
const maxUsageObject = 4 << 10

// usageTargets are the key paths (object keys from the document's object)
// where each format puts its usage object. The document may also be an
// array of such objects (Gemini's streamGenerateContent without alt=sse);
// no other array is looked into.
var usageTargets = map[string][][]string{
	resolve.UsageOpenAI:    {{"usage"}, {"response", "usage"}},
	resolve.UsageAnthropic: {{"usage"}, {"message", "usage"}},
	resolve.UsageGemini:    {{"usageMetadata"}},
}

// Usage is what a response reported, as read so far.
type Usage struct {
	Input, Output int64
	HaveInput     bool
	Complete      bool // the final totals were read
	// Malformed: the scanner met bytes that are not JSON where it followed
	// the document, or a usage object it could not read (not JSON, or over
	// maxUsageObject). Only says why usage is missing, when it is.
	Malformed bool
}

// observe folds one usage object found at target path into u.
func (u *Usage) observe(format string, path []string, raw []byte) {
	var f struct {
		PromptTokens     *int64 `json:"prompt_tokens"`
		CompletionTokens *int64 `json:"completion_tokens"`
		InputTokens      *int64 `json:"input_tokens"`
		OutputTokens     *int64 `json:"output_tokens"`
		CacheCreation    *int64 `json:"cache_creation_input_tokens"`
		CacheRead        *int64 `json:"cache_read_input_tokens"`
		PromptCount      *int64 `json:"promptTokenCount"`
		ToolPromptCount  *int64 `json:"toolUsePromptTokenCount"`
		CandidatesCount  *int64 `json:"candidatesTokenCount"`
		ThoughtsCount    *int64 `json:"thoughtsTokenCount"`
	}
	if json.Unmarshal(raw, &f) != nil {
		u.Malformed = true
		return
	}
	v := func(p *int64) int64 {
		if p == nil || *p < 0 {
			return 0
		}
		return *p
	}
	switch format {
	case resolve.UsageOpenAI:
		in := f.PromptTokens
		if in == nil {
			in = f.InputTokens
		}
		if in == nil {
			return
		}
		out := f.CompletionTokens
		if out == nil {
			out = f.OutputTokens // Responses; embeddings report no output
		}
		u.Input, u.Output, u.HaveInput, u.Complete = v(in), v(out), true, true
	case resolve.UsageAnthropic:
		if f.InputTokens != nil {
			u.Input, u.HaveInput = v(f.InputTokens)+v(f.CacheCreation)+v(f.CacheRead), true
		}
		if f.OutputTokens != nil {
			u.Output = v(f.OutputTokens)
		}
		// message_start's usage (message.usage) opens a stream; the top-level
		// usage of a message_delta or of a whole message has the final output.
		if len(path) == 1 && f.OutputTokens != nil && u.HaveInput {
			u.Complete = true
		}
	case resolve.UsageGemini:
		if f.PromptCount == nil {
			return
		}
		u.Input = v(f.PromptCount) + v(f.ToolPromptCount)
		u.Output = v(f.CandidatesCount) + v(f.ThoughtsCount)
		u.HaveInput, u.Complete = true, true
	}
}
