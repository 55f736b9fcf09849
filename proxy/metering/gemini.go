package metering

import (
	"strconv"
	"strings"

	"github.com/phantomvault/phantom/internal/resolve"
)

// Gemini names its model in the path and takes its output cap inside
// generationConfig, in either spelling protobuf JSON accepts.
var (
	geminiKeys       = []string{"generationConfig", "generation_config"}
	geminiConfigKeys = []string{"maxOutputTokens", "max_output_tokens", "candidateCount", "candidate_count"}
)

// checkGeminiBody checks a generateContent body: its output cap lives in
// generationConfig.maxOutputTokens (the model is in the path).
func checkGeminiBody(raw []byte, top *object, l *resolve.Limits, path string) (asked int64, edits []edit, ref *Refusal) {
	cfgKey, cfg := "generationConfig", top.members["generationConfig"]
	if snake, ok := top.members["generation_config"]; ok {
		if cfg.raw != nil {
			return 0, nil, badRequest("the request body has both generationConfig and generation_config")
		}
		cfgKey, cfg = "generation_config", snake
	}
	var inner *object
	if cfg.raw != nil {
		if cfg.raw[0] != '{' {
			return 0, nil, badRequest("the request body's " + cfgKey + " is not an object")
		}
		var err error
		if inner, err = scanObject(raw[cfg.start:cfg.end], cfg.start, geminiConfigKeys); err != nil {
			return 0, nil, badRequest("the request body's " + cfgKey + ": " + err.Error())
		}
		for _, pair := range [][2]string{{"maxOutputTokens", "max_output_tokens"}, {"candidateCount", "candidate_count"}} {
			_, a := inner.members[pair[0]]
			_, b := inner.members[pair[1]]
			if a && b {
				return 0, nil, badRequest("the request body's " + cfgKey + " has both " + pair[0] + " and " + pair[1])
			}
		}
		for _, k := range []string{"maxOutputTokens", "max_output_tokens"} {
			n, ok, err := intMember(inner, k)
			if err != nil {
				return 0, nil, badRequest(err.Error())
			}
			if ok {
				if l.MaxOutputTokens > 0 && n > l.MaxOutputTokens {
					return 0, nil, refuse(resolve.ReasonOutputCapExceeded)
				}
				asked = n
			}
		}
		if l.MaxOutputTokens > 0 || l.BudgetRemaining != nil {
			for _, k := range []string{"candidateCount", "candidate_count"} {
				if n, ok, err := intMember(inner, k); err != nil {
					return 0, nil, badRequest(err.Error())
				} else if ok && n > 1 {
					return 0, nil, severalCompletions(k + " above 1")
				}
			}
		}
	}
	generates := strings.HasSuffix(path, ":generateContent") || strings.HasSuffix(path, ":streamGenerateContent")
	if l.MaxOutputTokens > 0 && asked == 0 && generates {
		capText := strconv.FormatInt(l.MaxOutputTokens, 10)
		for _, k := range []string{"maxOutputTokens", "max_output_tokens"} {
			if inner == nil {
				break
			}
			if _, null := inner.members[k]; null {
				return 0, nil, badRequest("the request body's " + k + " is null: give a number or leave it out")
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
		return l.MaxOutputTokens, []edit{e}, nil
	}
	return asked, nil, nil
}

// checkGeminiPath applies a model rule to the model a Gemini path names.
func checkGeminiPath(path string, allowed []string) *Refusal {
	model, ok := geminiModel(path)
	if !ok {
		return badRequest("a model rule applies, and the path must name the model once, as its last segment: models/{model}:{method}, the model in letters, digits and ._-")
	}
	if !resolve.ModelAllowed(allowed, model) {
		return refuse(resolve.ReasonModelNotAllowed)
	}
	return nil
}

// geminiModel returns the model a Gemini-style path names, in its last
// segment and nowhere else: .../models/{model}:{method} gives {model}, and
// .../tunedModels/{name}:{method} gives "tunedModels/{name}", so that no
// glob for base models ever matches a tuned one by accident. Vertex AI
// paths (.../publishers/google/models/{model}:...) read the same. A path
// with another models segment (in any case), a name outside
// letters, digits and "._-" ('@', ',', percent-escapes), or no method
// names no model the upstream can be trusted to run.
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
