package metering

import (
	"encoding/json"
	"net/url"
	"strings"

	"github.com/phantomvault/phantom/internal/resolve"
)

// The model rule (resolve.Limits.AllowedModels): the model checked must be
// the model the upstream runs, named once, in plain characters.

// maxModelName bounds a model name that is read; a longer one is refused
// before it is copied.
const maxModelName = 256

// checkModelTarget refuses, when a model rule applies, request targets
// where the model that runs is not the one checked: a model query
// parameter, an Azure-style deployment, whose model is chosen by the
// deployment in the path whatever the body names, and, where the model is
// read from the body (modelInBody), a path that names one.
func checkModelTarget(path, rawQuery string, modelInBody bool) *Refusal {
	segs := strings.Split(path, "/")
	for i, seg := range segs {
		if strings.EqualFold(seg, "deployments") {
			return badRequest("a model rule applies, and the model of an Azure deployment is in its path, not in the body: scope the token with allowed_paths instead")
		}
		// Gateways that serve several APIs run the model a path names
		// (Bedrock's /model/<id>/invoke, Vertex's .../models/<id>:rawPredict,
		// Gemini's models/<id>:generateContent) whatever the body says.
		if modelInBody && i+1 < len(segs) && segs[i+1] != "" && (strings.EqualFold(seg, "models") || strings.EqualFold(seg, "model")) {
			return badRequest("a model rule applies, and the path names a model: the model must be named in the request body alone (scope other APIs with allowed_paths, or a route of their own usage_format)")
		}
	}
	for _, pair := range strings.FieldsFunc(rawQuery, func(r rune) bool { return r == '&' || r == ';' }) {
		name, _, _ := strings.Cut(pair, "=")
		name, err := url.QueryUnescape(name)
		if err != nil || strings.EqualFold(strings.TrimSpace(name), "model") {
			return badRequest("a model rule applies, so the model must be named in the request body alone, not in the query")
		}
	}
	return nil
}

// validModelName reports whether name is a model name matched against a
// model rule: 1 to 256 bytes of letters, digits and "._-", and in a body
// also ':' and '/' (OpenAI fine-tunes are ft:base:org::id; OpenRouter-style
// names are vendor/model). Anything else ('@', ',', spaces, escapes) could
// be read by an upstream as another model than the glob matched.
func validModelName(name string, colonSlash bool) bool {
	if name == "" || len(name) > maxModelName {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		case colonSlash && (c == ':' || c == '/'):
		default:
			return false
		}
	}
	return true
}

// bodyModel reads the model a request body names, refusing it before any
// copy when it is too long to be a model name.
func bodyModel(raw []byte) (string, *Refusal) {
	if len(raw) > maxModelName+2 {
		return "", badRequest("the request body's model is longer than 256 bytes")
	}
	var model string
	if err := json.Unmarshal(raw, &model); err != nil {
		return "", badRequest("the request body's model is not a string")
	}
	if !validModelName(model, true) {
		return "", badRequest("a model rule applies, and the request body's model is not 1 to 256 letters, digits and ._:/-")
	}
	return model, nil
}

// checkToolModels applies the model rule to the tools a request names that
// run a model of their own (the Responses API's image_generation takes a
// "model"): every tool object's model, its key matched as encoding/json
// matches keys, must be allowed too.
func checkToolModels(raw []byte, allowed []string) *Refusal {
	var tools []map[string]json.RawMessage
	if err := json.Unmarshal(raw, &tools); err != nil {
		return badRequest("a model rule applies, and the request body's tools is not a list of objects")
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
				return refuse(resolve.ReasonModelNotAllowed)
			}
		}
	}
	return nil
}

// checkFallbackModels applies the model rule to the models a gateway runs
// when the body's own fails: OpenRouter's "models" and LiteLLM's
// "fallbacks". Each must be a model name, and allowed.
func checkFallbackModels(key string, raw []byte, allowed []string) *Refusal {
	var list []json.RawMessage
	if err := json.Unmarshal(raw, &list); err != nil {
		return badRequest("a model rule applies, and the request body's " + key + " is not a list of model names")
	}
	for _, v := range list {
		model, ref := bodyModel(v)
		if ref != nil {
			return ref
		}
		if !resolve.ModelAllowed(allowed, model) {
			return refuse(resolve.ReasonModelNotAllowed)
		}
	}
	return nil
}
