package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
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
func applyLimits(out *http.Request, ex *exchange) *refusal {
	l := ex.grant.Limits
	if l.BudgetRemaining != nil {
		if ref := unmeasurable(out, ex.path); ref != nil {
			return ref
		}
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
	if format == resolve.UsageGemini && len(l.AllowedModels) > 0 {
		model, ok := geminiModel(ex.path)
		if !ok {
			return badBody("a model rule applies and the path names no model (models/{model}:generateContent)")
		}
		if !resolve.ModelAllowed(l.AllowedModels, model) {
			return limitRefusal(resolve.ReasonModelNotAllowed)
		}
	}
	if !limitsNeedBody(l) {
		return nil
	}
	if len(contentCodings(out.Header)) > 0 {
		return badBody("a request body with a Content-Encoding cannot be checked against the token's limits: send it uncompressed")
	}
	raw, err := io.ReadAll(out.Body)
	if err != nil {
		return bodyReadRefusal(err, ex)
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
	out.Body = io.NopCloser(bytes.NewReader(raw))
	out.ContentLength = int64(len(raw))
	out.TransferEncoding = nil
	out.Header.Del("Content-Length") // the transport writes it from ContentLength
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
func limitRefusal(reason string) *refusal {
	status, message := resolve.Refusal(reason)
	return &refusal{status: status, reason: reason, message: message}
}

func badBody(message string) *refusal {
	return &refusal{status: http.StatusBadRequest, reason: resolve.ReasonBadRequest, message: message}
}

// bodyReadRefusal answers a body that could not be read whole, as
// proxyError does for one that failed on its way upstream.
func bodyReadRefusal(err error, ex *exchange) *refusal {
	var maxErr *http.MaxBytesError
	switch {
	case errors.As(err, &maxErr):
		return &refusal{status: http.StatusRequestEntityTooLarge, reason: "body_too_large", message: "the request body is too large"}
	case ex.bodyOverride.Load():
		return badBody("the request body names a method override (_method), which some upstreams run instead of the method resolved")
	case ex.bodyStalled.Load():
		return &refusal{status: http.StatusRequestTimeout, reason: "body_timeout", message: "the request body stopped arriving"}
	}
	return badBody("the request body could not be read")
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
	openAIKeys = []string{"model", "stream", "stream_options", "max_tokens", "max_completion_tokens", "max_output_tokens", "n", "best_of"}
	geminiKeys = []string{"generationConfig", "generation_config"}
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
		var model string
		if err := json.Unmarshal(m.raw, &model); err != nil {
			return nil, badBody("the request body's model is not a string")
		}
		if !resolve.ModelAllowed(l.AllowedModels, model) {
			return nil, limitRefusal(resolve.ReasonModelNotAllowed)
		}
	}
	var edits []edit
	if l.MaxOutputTokens > 0 {
		for _, k := range []string{"n", "best_of"} {
			if n, ok, err := intMember(top, k); err != nil {
				return nil, badBody(err.Error())
			} else if ok && n > 1 {
				// n choices of up to the cap each would multiply the bound.
				return nil, limitRefusal(resolve.ReasonOutputCapExceeded)
			}
		}
	}
	for _, k := range []string{"max_tokens", "max_completion_tokens", "max_output_tokens"} {
		n, ok, err := intMember(top, k)
		if err != nil {
			return nil, badBody(err.Error())
		}
		if !ok {
			continue
		}
		if l.MaxOutputTokens > 0 && n > l.MaxOutputTokens {
			return nil, limitRefusal(resolve.ReasonOutputCapExceeded)
		}
		out.asked = max(out.asked, n)
	}
	if l.MaxOutputTokens > 0 && out.asked == 0 {
		if key := capKey(l.UsageFormat, path); key != "" {
			if _, null := top.members[key]; null {
				return nil, badBody("the request body's " + key + " is null: give a number or leave it out")
			}
			edits = append(edits, top.insert(key, strconv.FormatInt(l.MaxOutputTokens, 10)))
			out.asked = l.MaxOutputTokens
		}
	}
	if l.BudgetRemaining != nil && l.UsageFormat == resolve.UsageOpenAI && strings.HasSuffix(path, "/completions") {
		e, ref := includeUsage(raw, top)
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

// capKey is the key the proxy inserts to give a request without one the
// output cap, or "" where it inserts none (embeddings, token counting: an
// unknown key could make the upstream refuse the request).
//   - OpenAI chat completions: max_completion_tokens, the current name,
//     which every OpenAI model takes and reasoning models require (they
//     refuse max_tokens); a compatible server that knows only max_tokens
//     works when the agent sends max_tokens itself.
//   - OpenAI Responses: max_output_tokens; legacy completions: max_tokens.
//   - Anthropic messages: max_tokens (which the API requires anyway).
func capKey(format, path string) string {
	switch {
	case format == resolve.UsageAnthropic && strings.HasSuffix(path, "/messages"):
		return "max_tokens"
	case format == resolve.UsageAnthropic:
		return ""
	case strings.HasSuffix(path, "/chat/completions"):
		return "max_completion_tokens"
	case strings.HasSuffix(path, "/responses"):
		return "max_output_tokens"
	case strings.HasSuffix(path, "/completions"):
		return "max_tokens"
	}
	return ""
}

// includeUsage makes an OpenAI (chat) completions stream report its usage:
// without stream_options.include_usage the stream carries none, and a budget
// could not be charged. It inserts the option, or refuses a body that turns
// it off. The agent then gets one more chunk before [DONE], with empty
// choices and the usage (OpenAI's documented behaviour, which the SDKs
// handle).
func includeUsage(raw []byte, top *object) (*edit, *refusal) {
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
					return nil, limitRefusal(resolve.ReasonOutputCapExceeded)
				}
				out.asked = n
			}
		}
		if l.MaxOutputTokens > 0 {
			for _, k := range []string{"candidateCount", "candidate_count"} {
				if n, ok, err := intMember(inner, k); err != nil {
					return nil, badBody(err.Error())
				} else if ok && n > 1 {
					return nil, limitRefusal(resolve.ReasonOutputCapExceeded)
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

// geminiModel returns the model a Gemini-style path names:
// .../models/{model}:{method} (also .../models/{model} alone) gives
// {model}, and .../tunedModels/{name}:{method} gives "tunedModels/{name}",
// so that no glob for base models ever matches a tuned one by accident.
// Vertex AI paths (.../publishers/google/models/{model}:...) read the same.
func geminiModel(path string) (string, bool) {
	segs := strings.Split(path, "/")
	for i := len(segs) - 1; i >= 1; i-- {
		if segs[i-1] != "models" && segs[i-1] != "tunedModels" {
			continue
		}
		name, _, _ := strings.Cut(segs[i], ":")
		name, err := url.PathUnescape(name)
		if err != nil || name == "" {
			return "", false
		}
		if segs[i-1] == "tunedModels" {
			name = "tunedModels/" + name
		}
		return name, true
	}
	return "", false
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

// scanObject reads the JSON object b (which starts at offset base of the
// body) and keeps the members named in watched. It refuses anything but
// one object, a watched key twice, and a key equal to a watched one but
// for case.
func scanObject(b []byte, base int, watched []string) (*object, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, errors.New("not a JSON object")
	}
	o := &object{members: map[string]member{}, empty: true}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, errors.New("not valid JSON")
		}
		key, _ := t.(string)
		o.empty = false
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, errors.New("not valid JSON")
		}
		i := slices.IndexFunc(watched, func(w string) bool { return strings.EqualFold(w, key) })
		if i < 0 {
			continue
		}
		if key != watched[i] {
			return nil, fmt.Errorf("the key %q differs from %q only in case", key, watched[i])
		}
		if _, dup := o.members[key]; dup {
			return nil, fmt.Errorf("the key %q appears twice", key)
		}
		end := int(dec.InputOffset())
		o.members[key] = member{raw: raw, start: base + end - len(raw), end: base + end}
	}
	if t, err := dec.Token(); err != nil || t != json.Delim('}') {
		return nil, errors.New("not valid JSON")
	}
	o.closeAt = base + int(dec.InputOffset()) - 1
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("more than one JSON value")
	}
	return o, nil
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
	n, perr := strconv.ParseInt(string(m.raw), 10, 64)
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

// applyEdits returns raw with the edits made, nil when there are none.
func applyEdits(raw []byte, edits []edit) []byte {
	if len(edits) == 0 {
		return nil
	}
	slices.SortFunc(edits, func(a, b edit) int { return a.at - b.at })
	n := len(raw)
	for _, e := range edits {
		n += len(e.text)
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
