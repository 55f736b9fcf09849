package proxy

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/phantomvault/phantom/internal/resolve"
)

// Limits the engine hands down with an allowed answer (resolve.Limits) that
// the proxy enforces on the request itself: the model allow-list, the
// per-request output cap, and, under a budget, that the response's usage can
// be measured. Only a request whose grant carries such a limit pays for
// reading its body; every other request takes the nil check in ServeHTTP.

// meter is what the proxy needs to charge one request's usage: who pays, how
// the upstream reports usage, and what to charge when it reports none.
type meter struct {
	route, accessor string
	format          string // resolve.Usage*
	// estimate: charge a response whose usage cannot be read. Only when the
	// body was read as JSON under a budget or a cap, where an estimate
	// bounds what the request could spend; on a route that only counts
	// usage, an upload's bytes are no estimate of anything.
	estimate    bool
	estimateIn  int64 // the request body's length: an upper bound on its text's input tokens
	estimateOut int64 // the output cap, else what the request asked for, else 0
}

// limitsNeedBody reports whether enforcing l requires reading the body.
// (A Gemini model is in the path: a model rule alone reads no body there.)
func limitsNeedBody(l *resolve.Limits) bool {
	models := len(l.AllowedModels) > 0 && l.UsageFormat != resolve.UsageGemini
	return models || l.MaxOutputTokens > 0 || l.BudgetRemaining != nil
}

// applyLimits enforces ex.grant.Limits on out before it is forwarded: it
// reads and checks the body when a limit needs it, rewrites the body when
// the cap or measurability must be added, and sets ex.meter when the
// response's usage is to be charged.
func applyLimits(out *http.Request, ex *exchange, mem *bodyMemory) *refusal {
	l := ex.grant.Limits
	if ref := checkEndpoint(out, ex); ref != nil { // limits_endpoint.go
		return ref
	}
	// Only a request with a body can ask a model for anything: a GET that
	// lists models is neither checked nor charged.
	hasBody := out.Method == http.MethodPost || out.ContentLength != 0
	if !hasBody {
		return nil
	}
	format := l.UsageFormat
	if format != "" {
		ex.meter = &meter{route: ex.grant.Route, accessor: ex.grant.Accessor, format: format, estimateOut: l.MaxOutputTokens}
	}
	if len(l.AllowedModels) > 0 {
		if ref := checkModelTarget(ex.path, ex.rawQuery); ref != nil { // limits_body.go
			return ref
		}
	}
	if format == resolve.UsageGemini && len(l.AllowedModels) > 0 {
		model, ok := geminiModel(ex.path)
		if !ok {
			return badBody("a model rule applies, and the path must name the model once, as its last segment: models/{model}:{method}, the model in letters, digits and ._-")
		}
		if !resolve.ModelAllowed(l.AllowedModels, model) {
			return refusalFor(resolve.ReasonModelNotAllowed)
		}
	}
	if !limitsNeedBody(l) {
		return nil
	}
	if len(contentCodings(out.Header)) > 0 {
		return badBody("a request body with a Content-Encoding cannot be checked against the token's limits: send it uncompressed")
	}
	raw, ref := mem.read(out, ex) // limits_body.go
	if ref != nil {
		return ref
	}
	body, ref := checkLimitedBody(raw, l, ex.path)
	if ref != nil {
		return ref
	}
	if ex.meter != nil {
		ex.meter.estimate = true
		ex.meter.estimateIn = int64(len(raw))
		if ex.meter.estimateOut == 0 {
			ex.meter.estimateOut = body.asked
		}
	}
	if body.rewritten != nil {
		raw = body.rewritten
	}
	ex.hold(out, raw)
	return nil
}

// unmeasurable refuses, under a budget, requests that spend LLM tokens the
// proxy cannot measure: the batch APIs (OpenAI's and Anthropic's /batches,
// Gemini's :batchGenerateContent), whose work and usage come long after the
// request, outside it. (WebSockets, such as OpenAI's Realtime API, are
// refused for every token: checkTarget.) Other endpoints that work in the
// background are for the route's allowed_paths to leave out.
func unmeasurable(r *http.Request, path string) *refusal {
	if r.Method == http.MethodPost && (strings.HasSuffix(path, "/batches") || strings.HasSuffix(path, ":batchGenerateContent")) {
		return badBody("the phantom token has an LLM token budget, and the usage of a batch cannot be measured: send its requests one by one")
	}
	return nil
}

// limitRefusal refuses with one of the engine's reasons, as if the engine
// had denied: the proxy decides these from the answer's Limits.
func badBody(message string) *refusal {
	return refusalWith(resolve.ReasonBadRequest, message)
}

// bodyReadRefusal answers a body that could not be read whole, as
// proxyError does for one that failed on its way upstream.
func bodyReadRefusal(err error, ex *exchange) *refusal {
	if ref := bodyRefusal(err, ex); ref != nil {
		return ref
	}
	return badBody("the request body could not be read")
}

// bodyRefusal is the answer when the agent's body, not the upstream, made
// a request fail: too large, naming a method override, or stalled; nil
// otherwise.
func bodyRefusal(err error, ex *exchange) *refusal {
	var maxErr *http.MaxBytesError
	switch {
	case errors.As(err, &maxErr):
		return refusalFor(resolve.ReasonBodyTooLarge)
	case ex.bodyOverride.Load():
		return badBody("the request body names a method override (_method), which some upstreams run instead of the method resolved")
	case ex.bodyStalled.Load():
		return refusalFor(resolve.ReasonBodyTimeout)
	}
	return nil
}

// limitedBody is what checkLimitedBody found.
type limitedBody struct {
	asked     int64  // output tokens the request asks for (0: none named)
	rewritten []byte // the body with the cap or stream_options added; nil when unchanged
}

// Top-level keys the checks read. A body with one of them twice, or with a
// key that differs from one only in case (Go's encoding/json and others
// match keys without case), is refused: the upstream might read another
// value than the one checked.
var (
	openAIKeys = []string{"model", "stream", "stream_options", "max_tokens", "max_completion_tokens", "max_output_tokens", "n", "best_of", "background", "tools",
		"prompt", "prediction"}
	geminiKeys = []string{"generationConfig", "generation_config"}
	// The keys of an output cap in the OpenAI and Anthropic APIs; which of
	// them an endpoint reads is in limits_endpoint.go.
	capKeys = [...]string{"max_tokens", "max_completion_tokens", "max_output_tokens"}
	// Inside Gemini's generationConfig (protobuf JSON takes either spelling).
	geminiConfigKeys = []string{"maxOutputTokens", "max_output_tokens", "candidateCount", "candidate_count"}
)

// checkLimitedBody checks a JSON request body against l and returns what
// it asks for, and the body rewritten when the cap must be inserted or a
// stream made measurable.
func checkLimitedBody(raw []byte, l *resolve.Limits, path string) (*limitedBody, *refusal) {
	watched := openAIKeys
	if l.UsageFormat == resolve.UsageGemini {
		watched = geminiKeys
	}
	top, err := scanObject(raw, 0, watched)
	if err != nil {
		return nil, badBody("a limit of the phantom token applies, so the request body must be one JSON object: " + err.Error())
	}
	if l.UsageFormat == resolve.UsageGemini {
		return checkGeminiBody(raw, top, l, path)
	}
	out := &limitedBody{}
	if len(l.AllowedModels) > 0 {
		m, ok := top.members["model"]
		if !ok {
			return nil, badBody("a model rule applies and the request body names no model")
		}
		model, ref := bodyModel(m.raw) // limits_body.go
		if ref != nil {
			return nil, ref
		}
		if !resolve.ModelAllowed(l.AllowedModels, model) {
			return nil, refusalFor(resolve.ReasonModelNotAllowed)
		}
		if tools, ok := top.members["tools"]; ok {
			if ref := checkToolModels(tools.raw, l.AllowedModels); ref != nil {
				return nil, ref
			}
		}
	}
	var edits []edit
	if l.MaxOutputTokens > 0 || l.BudgetRemaining != nil {
		if ref := oneCompletion(top); ref != nil {
			return nil, ref
		}
	}
	var given [len(capKeys)]bool // which of capKeys the body gives a number
	for i, k := range capKeys {
		n, ok, err := intMember(top, k)
		if err != nil {
			return nil, badBody(err.Error())
		}
		if !ok {
			continue
		}
		if l.MaxOutputTokens > 0 && n > l.MaxOutputTokens {
			return nil, refusalFor(resolve.ReasonOutputCapExceeded)
		}
		given[i] = n > 0 // 0 is no bound to some servers: the cap goes in
		out.asked = max(out.asked, n)
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
				return nil, badBody("the request body's " + e.capKey + " is null or 0: give a positive number or leave it out")
			}
			edits = append(edits, top.insert(e.capKey, strconv.FormatInt(l.MaxOutputTokens, 10)))
			out.asked = l.MaxOutputTokens
		}
	}
	if l.BudgetRemaining != nil && l.UsageFormat == resolve.UsageOpenAI {
		e, ref := includeUsage(raw, top, path)
		if ref != nil {
			return nil, ref
		}
		if e != nil {
			edits = append(edits, *e)
		}
	}
	out.rewritten = applyEdits(raw, edits)
	return out, nil
}

// checkToolModels applies the model rule to the tools a request names that
// run a model of their own (the Responses API's image_generation takes a
// "model"): every tool object's model, its key matched as encoding/json
// matches keys, must be allowed too.
func checkToolModels(raw []byte, allowed []string) *refusal {
	var tools []map[string]json.RawMessage
	if err := json.Unmarshal(raw, &tools); err != nil {
		return badBody("a model rule applies, and the request body's tools is not a list of objects")
	}
	for _, tool := range tools {
		for k, v := range tool {
			if !strings.EqualFold(k, "model") {
				continue
			}
			model, ref := bodyModel(v)
			if ref != nil {
				return ref
			}
			if !resolve.ModelAllowed(allowed, model) {
				return refusalFor(resolve.ReasonModelNotAllowed)
			}
		}
	}
	return nil
}

// oneCompletion refuses, under a cap or a budget, a request that asks for
// several completions, or for output that no cap bounds. The engine
// reserves one output cap per request, and the proxy checks the cap once
// per request: a request for k completions may spend k caps. In the APIs
// the endpoint rule lets through (limits_endpoint.go):
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
func oneCompletion(top *object) *refusal {
	for _, k := range []string{"n", "best_of"} {
		if n, ok, err := intMember(top, k); err != nil {
			return badBody(err.Error())
		} else if ok && n > 1 {
			return severalCompletions(k + " above 1")
		}
	}
	if m, ok := top.members["prompt"]; ok && prompts(m.raw) > 1 {
		return severalCompletions("a list of several prompts")
	}
	if m, ok := top.members["prediction"]; ok && string(m.raw) != "null" {
		ref := refusalFor(resolve.ReasonOutputCapExceeded)
		ref.message = "the phantom token caps the output of each request, and a prediction's rejected tokens are billed as output " +
			"beyond any cap: leave prediction out"
		return ref
	}
	return nil
}

// severalCompletions refuses a request for more than one completion: as a
// request over the cap (403 max_output_tokens_exceeded), saying why.
func severalCompletions(what string) *refusal {
	ref := refusalFor(resolve.ReasonOutputCapExceeded)
	ref.message = "the phantom token's output cap bounds one completion per request, and " + what +
		" asks for several, each up to the cap: send one per request"
	return ref
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

// includeUsage makes an OpenAI request under a budget measurable in the
// answer to it. A (chat) completions stream reports its usage only with
// stream_options.include_usage: it inserts the option, or refuses a body
// that turns it off (the agent then gets one more chunk before [DONE], with
// empty choices and the usage: OpenAI's documented behaviour, which the
// SDKs handle). A Responses request with background: true runs after its
// answer, which carries no usage: it is refused.
func includeUsage(raw []byte, top *object, path string) (*edit, *refusal) {
	if strings.HasSuffix(path, "/responses") {
		if m, ok := top.members["background"]; ok && string(m.raw) != "false" && string(m.raw) != "null" {
			return nil, badBody("the phantom token has an LLM token budget, and a background response spends after its answer, " +
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
			return nil, badBody("the request body's stream is not true or false")
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
		return nil, badBody(refused)
	}
	inner, err := scanObject(raw[opts.start:opts.end], opts.start, []string{"include_usage"})
	if err != nil {
		return nil, badBody("the request body's stream_options: " + err.Error())
	}
	iu, ok := inner.members["include_usage"]
	if !ok {
		e := inner.insert("include_usage", "true")
		return &e, nil
	}
	if string(iu.raw) != "true" {
		return nil, badBody(refused)
	}
	return nil, nil
}

// checkGeminiBody checks a generateContent body: its output cap lives in
// generationConfig.maxOutputTokens (the model is in the path).
func checkGeminiBody(raw []byte, top *object, l *resolve.Limits, path string) (*limitedBody, *refusal) {
	out := &limitedBody{}
	cfgKey, cfg := "generationConfig", top.members["generationConfig"]
	if snake, ok := top.members["generation_config"]; ok {
		if cfg.raw != nil {
			return nil, badBody("the request body has both generationConfig and generation_config")
		}
		cfgKey, cfg = "generation_config", snake
	}
	var inner *object
	if cfg.raw != nil {
		if cfg.raw[0] != '{' {
			return nil, badBody("the request body's " + cfgKey + " is not an object")
		}
		var err error
		if inner, err = scanObject(raw[cfg.start:cfg.end], cfg.start, geminiConfigKeys); err != nil {
			return nil, badBody("the request body's " + cfgKey + ": " + err.Error())
		}
		for _, pair := range [][2]string{{"maxOutputTokens", "max_output_tokens"}, {"candidateCount", "candidate_count"}} {
			_, a := inner.members[pair[0]]
			_, b := inner.members[pair[1]]
			if a && b {
				return nil, badBody("the request body's " + cfgKey + " has both " + pair[0] + " and " + pair[1])
			}
		}
		for _, k := range []string{"maxOutputTokens", "max_output_tokens"} {
			n, ok, err := intMember(inner, k)
			if err != nil {
				return nil, badBody(err.Error())
			}
			if ok {
				if l.MaxOutputTokens > 0 && n > l.MaxOutputTokens {
					return nil, refusalFor(resolve.ReasonOutputCapExceeded)
				}
				out.asked = n
			}
		}
		if l.MaxOutputTokens > 0 || l.BudgetRemaining != nil {
			for _, k := range []string{"candidateCount", "candidate_count"} {
				if n, ok, err := intMember(inner, k); err != nil {
					return nil, badBody(err.Error())
				} else if ok && n > 1 {
					return nil, severalCompletions(k + " above 1")
				}
			}
		}
	}
	generates := strings.HasSuffix(path, ":generateContent") || strings.HasSuffix(path, ":streamGenerateContent")
	if l.MaxOutputTokens > 0 && out.asked == 0 && generates {
		capText := strconv.FormatInt(l.MaxOutputTokens, 10)
		for _, k := range []string{"maxOutputTokens", "max_output_tokens"} {
			if inner == nil {
				break
			}
			if _, null := inner.members[k]; null {
				return nil, badBody("the request body's " + k + " is null: give a number or leave it out")
			}
		}
		var e edit
		switch {
		case inner == nil:
			e = top.insert("generationConfig", `{"maxOutputTokens":`+capText+`}`)
		case cfgKey == "generation_config":
			e = inner.insert("max_output_tokens", capText)
		default:
			e = inner.insert("maxOutputTokens", capText)
		}
		out.asked = l.MaxOutputTokens
		out.rewritten = applyEdits(raw, []edit{e})
	}
	return out, nil
}

// geminiModel returns the model a Gemini-style path names, in its last
// segment and nowhere else: .../models/{model}:{method} gives {model}, and
// .../tunedModels/{name}:{method} gives "tunedModels/{name}", so that no
// glob for base models ever matches a tuned one by accident. Vertex AI
// paths (.../publishers/google/models/{model}:...) read the same. A path
// with another models segment (in any case), a name outside
// letters, digits and "._-" ('@', ',', percent-escapes), or no method
// names no model the proxy can be sure the upstream runs.
func geminiModel(path string) (string, bool) {
	segs := strings.Split(path, "/")
	if len(segs) < 2 {
		return "", false
	}
	last := len(segs) - 1
	for i, seg := range segs[:last] {
		isModels := strings.EqualFold(seg, "models") || strings.EqualFold(seg, "tunedModels")
		if isModels && i != last-1 {
			return "", false
		}
	}
	collection := segs[last-1]
	if collection != "models" && collection != "tunedModels" {
		return "", false
	}
	name, method, ok := strings.Cut(segs[last], ":")
	if !ok || method == "" || !validModelName(name, false) || !validModelName(method, false) {
		return "", false
	}
	if collection == "tunedModels" {
		name = "tunedModels/" + name
	}
	return name, true
}

// object is a JSON object's members that a check reads, and where the
// object ends, as offsets into the whole body.
type object struct {
	members map[string]member
	closeAt int // offset of the closing '}'
	empty   bool
}

type member struct {
	raw        []byte // the value, as written
	start, end int    // its offsets in the body
}

// intMember reads a non-negative integer member; ok is false when absent.
func intMember(o *object, key string) (n int64, ok bool, err error) {
	m, ok := o.members[key]
	if !ok {
		return 0, false, nil
	}
	if string(m.raw) == "null" {
		return 0, false, nil // absent, to the APIs
	}
	var perr error
	if len(m.raw) > 20 { // longer than any int64: refused before it is copied
		perr = strconv.ErrRange
	} else {
		n, perr = strconv.ParseInt(string(m.raw), 10, 64)
	}
	if perr != nil || n < 0 {
		return 0, false, fmt.Errorf("the request body's %s is not a non-negative integer", key)
	}
	return n, true, nil
}

// edit inserts text at an offset of the body.
type edit struct {
	at   int
	text string
}

// insert adds "key":value as the object's last member: only bytes are
// added before its closing brace, nothing of the body is re-encoded.
func (o *object) insert(key, value string) edit {
	text := strconv.Quote(key) + ":" + value
	if !o.empty {
		text = "," + text
	}
	return edit{at: o.closeAt, text: text}
}

// applyEdits returns raw with the edits made, nil when there are none. It
// makes them in raw's spare capacity when that holds them (copying nothing
// more than the bytes after each edit), so raw is not to be read after.
func applyEdits(raw []byte, edits []edit) []byte {
	if len(edits) == 0 {
		return nil
	}
	slices.SortStableFunc(edits, func(a, b edit) int { return a.at - b.at }) // inserts at one offset keep their order
	n := len(raw)
	for _, e := range edits {
		n += len(e.text)
	}
	if n <= cap(raw) {
		out := raw[:n]
		end := n // the edits from the last: each moves what follows it
		for k := len(edits) - 1; k >= 0; k-- {
			e := edits[k]
			tail := len(raw) - e.at
			if k < len(edits)-1 {
				tail = edits[k+1].at - e.at
			}
			copy(out[end-tail:end], raw[e.at:e.at+tail])
			end -= tail
			copy(out[end-len(e.text):end], e.text)
			end -= len(e.text)
		}
		return out
	}
	out := make([]byte, 0, n)
	prev := 0
	for _, e := range edits {
		out = append(out, raw[prev:e.at]...)
		out = append(out, e.text...)
		prev = e.at
	}
	return append(out, raw[prev:]...)
}
