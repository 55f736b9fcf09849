package plugin

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/phantomvault/phantom/internal/resolve"
)

// maxReportedTokens bounds each count of one report, so that sums never
// overflow: far above what any batch of LLM requests uses.
const maxReportedTokens = 1 << 40

func (b *backend) pathUsage() []*framework.Path {
	return []*framework.Path{{
		Pattern: "usage",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: "phantom",
			OperationSuffix: "usage",
		},
		Fields: map[string]*framework.FieldSchema{
			resolve.FieldReports: {
				Type: framework.TypeSlice,
				Description: fmt.Sprintf("Up to %d objects {accessor, input_tokens, output_tokens, estimated}: "+
					"what the proxy measured of one token's requests since its last report.", resolve.MaxReports),
			},
		},
		// Callbacks, as for resolve: the proxy calls with PATCH, sparing
		// the existence check, and the answer is computed in memory.
		Callbacks: map[logical.Operation]framework.OperationFunc{
			logical.UpdateOperation: b.pathUsageWrite,
			logical.PatchOperation:  b.pathUsageWrite,
		},
		HelpSynopsis:    "Report the LLM tokens that requests used (phantom-proxy's call).",
		HelpDescription: usageHelp,
	}}
}

func (b *backend) pathUsageWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	reports, err := decodeReports(d.Get(resolve.FieldReports))
	if err != nil {
		return logical.ErrorResponse("%s: nothing was applied", err), nil
	}
	applied, unknown := 0, 0
	touched := map[string]*tokenEntry{}
	for _, r := range reports {
		tokenHMAC, err := b.lookupTokenHMAC(ctx, req.Storage, r.Accessor)
		if err != nil {
			return nil, err
		}
		var t *tokenEntry
		if tokenHMAC != "" {
			if t, err = getTokenShared(ctx, req.Storage, tokenHMAC); err != nil {
				return nil, err
			}
		}
		if t == nil {
			unknown++ // tidied, or never minted here: nothing to charge
			continue
		}
		u := b.usage.entry(tokenHMAC, t)
		u.input.Add(r.InputTokens)
		u.output.Add(r.OutputTokens)
		u.estimated.Add(r.Estimated)
		touched[tokenHMAC] = t
		applied++
	}
	// A budget must survive a leader failover: the usage of tokens under a
	// budget is written now (off the request path: the proxy reports
	// asynchronously), the rest with the periodic flush.
	for tokenHMAC, t := range touched {
		route, err := getRouteShared(ctx, req.Storage, t.Route)
		if err != nil {
			return nil, err
		}
		if route == nil || route.ID != t.RouteID || effective(t, route).budget == 0 {
			continue
		}
		if v, ok := b.usage.m.Load(tokenHMAC); ok {
			if err := b.flushToken(ctx, req.Storage, tokenHMAC, v.(*usage)); err != nil {
				return nil, err
			}
		}
	}
	return &logical.Response{Data: map[string]any{"applied": applied, "unknown_accessors": unknown}}, nil
}

// decodeReports reads the reports field as Vault decoded it from JSON, and
// checks each: one malformed report refuses the whole call, so a proxy bug
// is loud rather than a silent undercount.
func decodeReports(raw any) ([]resolve.UsageReport, error) {
	items, _ := raw.([]any)
	if len(items) == 0 {
		return nil, fmt.Errorf("%s is required: a list of usage reports", resolve.FieldReports)
	}
	if len(items) > resolve.MaxReports {
		return nil, fmt.Errorf("at most %d reports per call", resolve.MaxReports)
	}
	js, err := json.Marshal(items)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", resolve.FieldReports, err)
	}
	var reports []resolve.UsageReport
	if err := json.Unmarshal(js, &reports); err != nil {
		return nil, fmt.Errorf("each report must be an object of an accessor and whole numbers")
	}
	for i := range reports {
		r := &reports[i]
		if err := r.Check(); err != nil {
			return nil, fmt.Errorf("report %d: %w", i, err)
		}
		if r.InputTokens > maxReportedTokens || r.OutputTokens > maxReportedTokens || r.Estimated > maxReportedTokens {
			return nil, fmt.Errorf("report %d: a count above %d", i, int64(maxReportedTokens))
		}
	}
	return reports, nil
}

const usageHelp = `
phantom-proxy reports here, asynchronously and in batches, the LLM tokens
that requests used, as the upstream reported them (routes with a
usage_format): reports is a list of objects {accessor, input_tokens,
output_tokens, estimated}, one per token since its last report; estimated
counts responses whose usage could not be read, charged at their output cap
(included in output_tokens).

A malformed report refuses the whole call (400) and nothing is applied.
Reports for accessors the engine does not know (tidied tokens) are skipped
and counted in the answer: applied, unknown_accessors.

Counts are kept in memory and flushed to the token records and the route
totals about once a minute; the usage of tokens under a token_budget is
written at once, so a budget survives a leader failover. A budget is
checked at resolve against every report received: a token whose budget is
spent is refused with budget_exhausted. Grant this path only to the proxy's
policy (capability patch).
`
