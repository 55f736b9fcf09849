package metering

import "testing"

func TestGeminiModelFromPath(t *testing.T) {
	for path, want := range map[string]string{
		"/v1beta/models/gemini-2.5-flash:generateContent":                                "gemini-2.5-flash",
		"/v1beta/models/gemini-2.5-pro:streamGenerateContent":                            "gemini-2.5-pro",
		"/v1/projects/p/locations/l/publishers/google/models/gemini-2.0:generateContent": "gemini-2.0",
		"/v1beta/tunedModels/my-model:generateContent":                                   "tunedModels/my-model",
		"/v1beta/models/gemini-2.0-flash-001:countTokens":                                "gemini-2.0-flash-001",
	} {
		if got, ok := geminiModel(path); !ok || got != want {
			t.Errorf("%s: %q %v, want %q", path, got, ok, want)
		}
	}
	// The model is named once, in the last segment, with its method, in
	// letters, digits and ._- alone.
	for _, path := range []string{
		"/v1beta/files",
		"/v1beta/models/gemini-2.5-pro:generateContent/models/gemini-2.0-flash",
		"/v1beta/models/gemini-2.5-pro/models/gemini-2.0-flash:generateContent",
		"/v1beta/Models/gemini-2.5-pro/models/gemini-2.0-flash:generateContent",
		"/v1beta/tunedModels/t/models/gemini-2.0-flash:generateContent",
		"/v1beta/models/gemini-2.0-flash@gemini-2.5-pro:generateContent",
		"/v1beta/models/gemini-2.0-flash,gemini-2.5-pro:generateContent",
		"/v1beta/models/gemini-1.5%2Dflash:generateContent",
		"/v1beta/models/:generateContent",
		"/v1beta/models/gemini-2.5-flash",
		"/v1beta/models/gemini-2.5-flash:",
		"/v1beta/MODELS/gemini-2.5-flash:generateContent",
	} {
		if got, ok := geminiModel(path); ok {
			t.Errorf("%s gave the model %q", path, got)
		}
	}
}
