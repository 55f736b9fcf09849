package metering

import (
	"encoding/json"
	"slices"
	"strconv"
	"strings"

	"github.com/phantomvault/phantom/internal/resolve"
)

// EditRoom is the spare capacity to leave after a body given to CheckBody:
// room for what it inserts (the cap, stream_options), so that inserting
// copies nothing.
const EditRoom = 256

// Body is a request body that passed the checks.
type Body struct {
	// Forward is the body to send upstream: the one checked, or it with
	// the output cap or stream_options.include_usage inserted (Edited).
	Forward []byte
	Edited  bool
	// Asked is the output tokens the request asks for: what it names, or
	// the cap inserted; 0 when it names none.
	Asked int64
}

// Top-level keys the checks read. A body with one of them twice, or with a
// key that differs from one only in case (Go's encoding/json and others
// match keys without case), is refused: the upstream might read another
// value than the one checked.
var (
	openAIKeys = []string{"model", "stream", "stream_options", "max_tokens", "max_completion_tokens", "max_output_tokens", "n", "best_of", "background", "tools",
		"prompt", "prediction", "models", "fallbacks"}
	// The keys of an output cap in the OpenAI and Anthropic APIs; which of
	// them an endpoint reads is in endpoint.go.
	capKeys = [...]string{"max_tokens", "max_completion_tokens", "max_output_tokens"}
)

// CheckBody checks the JSON body raw of a request to path against l: it
// returns the body to forward, with the cap inserted where the body names
// none and, under a budget, a stream made to report its usage; or the
// refusal. What it inserts goes into raw's spare capacity when that holds
// it (EditRoom), so raw is not to be read after.
func CheckBody(raw []byte, l *resolve.Limits, path string) (Body, *Refusal) {
	watched, check := openAIKeys, checkOpenAIBody
	if l.UsageFormat == resolve.UsageGemini {
		watched, check = geminiKeys, checkGeminiBody
	}
	top, err := scanObject(raw, 0, watched)
	if err != nil {
		return Body{}, badRequest("a limit of the phantom token applies, so the request body must be one JSON object: " + err.Error())
	}
	asked, edits, ref := check(raw, top, l, path)
	if ref != nil {
		return Body{}, ref
	}
	b := Body{Forward: raw, Asked: asked}
	if len(edits) > 0 {
		b.Forward, b.Edited = applyEdits(raw, edits), true
	}
	return b, nil
}

// checkOpenAIBody checks a body of the OpenAI APIs, or of Anthropic's
// messages (whose model and cap keys are the same): the model rule, the
// cap, one completion, and measurable usage under a budget.
func checkOpenAIBody(raw []byte, top *object, l *resolve.Limits, path string) (asked int64, edits []edit, ref *Refusal) {
	if len(l.AllowedModels) > 0 {
		m, ok := top.members["model"]
		if !ok {
			return 0, nil, badRequest("a model rule applies and the request body names no model")
		}
		model, ref := bodyModel(m.raw) // models.go
		if ref != nil {
			return 0, nil, ref
		}
		if !resolve.ModelAllowed(l.AllowedModels, model) {
			return 0, nil, refuse(resolve.ReasonModelNotAllowed)
		}
		if tools, ok := top.members["tools"]; ok {
			if ref := checkToolModels(tools.raw, l.AllowedModels); ref != nil {
				return 0, nil, ref
			}
		}
		for _, k := range []string{"models", "fallbacks"} {
			if list, ok := top.members[k]; ok {
				if ref := checkFallbackModels(k, list.raw, l.AllowedModels); ref != nil {
					return 0, nil, ref
				}
			}
		}
	}
	if l.MaxOutputTokens > 0 || l.BudgetRemaining != nil {
		if ref := oneCompletion(top); ref != nil { // completions.go
			return 0, nil, ref
		}
	}
	var given [len(capKeys)]bool // which of capKeys the body gives a number
	for i, k := range capKeys {
		n, ok, err := intMember(top, k)
		if err != nil {
			return 0, nil, badRequest(err.Error())
		}
		if !ok {
			continue
		}
		if l.MaxOutputTokens > 0 && n > l.MaxOutputTokens {
			return 0, nil, refuse(resolve.ReasonOutputCapExceeded)
		}
		given[i] = n > 0 // 0 is no bound to some servers: the cap goes in
		asked = max(asked, n)
	}
	if l.MaxOutputTokens > 0 {
		// The cap is inserted unless the body gives a key that this
		// endpoint reads: a number under another key bounds nothing here.
		capped := func(key string) bool {
			i := slices.Index(capKeys[:], key)
			return i >= 0 && given[i]
		}
		if e, _ := findEndpoint(l.UsageFormat, path); e.capKey != "" && !capped(e.capKey) && !capped(e.alsoCaps) {
			if _, null := top.members[e.capKey]; null {
				return 0, nil, badRequest("the request body's " + e.capKey + " is null or 0: give a positive number or leave it out")
			}
			edits = append(edits, top.insert(e.capKey, strconv.FormatInt(l.MaxOutputTokens, 10)))
			asked = l.MaxOutputTokens
		}
	}
	if l.BudgetRemaining != nil && l.UsageFormat == resolve.UsageOpenAI {
		e, ref := includeUsage(raw, top, path)
		if ref != nil {
			return 0, nil, ref
		}
		if e != nil {
			edits = append(edits, *e)
		}
	}
	return asked, edits, nil
}

// includeUsage makes an OpenAI request under a budget measurable in the
// answer to it. A (chat) completions stream reports its usage only with
// stream_options.include_usage: it inserts the option, or refuses a body
// that turns it off (the agent then gets one more chunk before [DONE], with
// empty choices and the usage: OpenAI's documented behaviour, which the
// SDKs handle). A Responses request with background: true runs after its
// answer, which carries no usage: it is refused.
func includeUsage(raw []byte, top *object, path string) (*edit, *Refusal) {
	if strings.HasSuffix(path, "/responses") {
		if m, ok := top.members["background"]; ok && string(m.raw) != "false" && string(m.raw) != "null" {
			return nil, badRequest("the phantom token has an LLM token budget, and a background response spends after its answer, " +
				"where its usage cannot be measured: leave background out (or false)")
		}
		return nil, nil
	}
	if !strings.HasSuffix(path, "/completions") {
		return nil, nil
	}
	stream := false
	if m, ok := top.members["stream"]; ok {
		if err := json.Unmarshal(m.raw, &stream); err != nil && string(m.raw) != "null" {
			return nil, badRequest("the request body's stream is not true or false")
		}
	}
	if !stream {
		return nil, nil
	}
	opts, ok := top.members["stream_options"]
	if !ok {
		e := top.insert("stream_options", `{"include_usage":true}`)
		return &e, nil
	}
	const refused = "the phantom token has an LLM token budget, so a stream must report its usage: " +
		"set stream_options.include_usage to true, or leave stream_options out"
	if len(opts.raw) == 0 || opts.raw[0] != '{' {
		return nil, badRequest(refused)
	}
	inner, err := scanObject(raw[opts.start:opts.end], opts.start, []string{"include_usage"})
	if err != nil {
		return nil, badRequest("the request body's stream_options: " + err.Error())
	}
	iu, ok := inner.members["include_usage"]
	if !ok {
		e := inner.insert("include_usage", "true")
		return &e, nil
	}
	if string(iu.raw) != "true" {
		return nil, badRequest(refused)
	}
	return nil, nil
}
