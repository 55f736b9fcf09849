package sdk

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
	openaioption "github.com/openai/openai-go/v3/option"

	"github.com/phantomvault/phantom/e2e/harness"
)

// The cap is inserted into a request that names none.
func TestLimitsOutputCapInserted(t *testing.T) {
	clearSDKEnv(t)
	v := harness.StartDevVault(t)
	oai := &llmUpstream{key: openaiKey}
	v.MustCLI(t, "write", "phantom/routes/openai", "upstream="+harness.StartUpstream(t, oai).URL, "allowed_paths=/v1/**", "allowed_methods=POST",
		"credential="+openaiKey, "usage_format=openai", "max_output_tokens=50")
	p := harness.StartProxy(t, v, usageReportIntervalFlag)
	tok, _ := v.MintAccessor(t, "openai")
	client := openaiClient(p, tok)
	if _, err := client.Chat.Completions.New(context.Background(), chatParams); err != nil {
		t.Fatal(err)
	}
	if got := oai.last(t)["max_completion_tokens"]; got != float64(50) {
		t.Fatalf("the upstream got max_completion_tokens %v: %v", got, oai.last(t))
	}
	params := chatParams
	params.MaxCompletionTokens = openai.Int(51)
	_, err := client.Chat.Completions.New(context.Background(), params)
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 403 || oai.count() != 1 {
		t.Fatalf("above the cap: %v (upstream saw %d)", err, oai.count())
	}
}

// A model outside the list (the route's, or the narrower one of the mint)
// is a 403 and never reaches the upstream.
func TestLimitsModelAllowList(t *testing.T) {
	clearSDKEnv(t)
	v := harness.StartDevVault(t)
	oai := &llmUpstream{key: openaiKey}
	v.MustCLI(t, "write", "phantom/routes/openai", "upstream="+harness.StartUpstream(t, oai).URL, "allowed_paths=/v1/**", "allowed_methods=POST",
		"credential="+openaiKey, "usage_format=openai", "allowed_models=gpt-4o-mini,gpt-4.1-*")
	p := harness.StartProxy(t, v)
	ctx := context.Background()
	tok, _ := v.MintAccessor(t, "openai")
	client := openaiClient(p, tok, openaioption.WithMaxRetries(0))
	if _, err := client.Chat.Completions.New(ctx, chatParams); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		tok   string
		model string
	}{{tok, "gpt-4o"}, {tok, "o3"}} {
		params := chatParams
		params.Model = c.model
		_, err := openaiClient(p, c.tok, openaioption.WithMaxRetries(2)).Chat.Completions.New(ctx, params)
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != 403 || !strings.Contains(apiErr.RawJSON(), "model_not_allowed") {
			t.Fatalf("%s: %v", c.model, err)
		}
	}
	narrow, _ := v.MintAccessor(t, "openai", "allowed_models=gpt-4.1-mini")
	params := chatParams // gpt-4o-mini: the route's, not the mint's
	_, err := openaiClient(p, narrow).Chat.Completions.New(ctx, params)
	var apiErr *openai.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 403 {
		t.Fatalf("a model outside the mint's list: %v", err)
	}
	params.Model = "gpt-4.1-mini"
	if _, err := openaiClient(p, narrow).Chat.Completions.New(ctx, params); err != nil {
		t.Fatal(err)
	}
	if oai.count() != 2 {
		t.Fatalf("the upstream saw %d requests, want 2", oai.count())
	}
}
