package plugin

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/phantomvault/phantom/internal/resolve"
)

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
				Description: fmt.Sprintf("Up to %d objects {accessor, input_tokens, output_tokens, estimated, settled}: "+
					"what the proxy measured of one token's requests since its last report, and how many of its "+
					"requests admitted under a budget it closes.", resolve.MaxReports),
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
	items, err := reportItems(d.Get(resolve.FieldReports))
	if err != nil {
		return logical.ErrorResponse("%s: nothing was applied", err), nil
	}
	// Everything is read before anything is applied: a storage error
	// applies nothing, so the proxy may send the call again.
	type valid struct {
		report    resolve.UsageReport
		tokenHMAC string
		t         *tokenEntry
	}
	var apply []valid
	unknown, rejected := 0, 0
	var firstRejection error
	budgeted := map[string]bool{} // token HMAC -> under a budget
	routes := map[string]*routeEntry{}
	for i, item := range items {
		r, err := decodeReport(item)
		if err != nil {
			// One bad report costs only its own usage: the others, of
			// other tokens, still count.
			rejected++
			if firstRejection == nil {
				firstRejection = fmt.Errorf("report %d: %w", i, err)
			}
			continue
		}
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
		route, seen := routes[t.Route]
		if !seen {
			if route, err = getRouteShared(ctx, req.Storage, t.Route); err != nil {
				return nil, err
			}
			routes[t.Route] = route
		}
		// Only a report that spent something changes what must survive;
		// one that only settles frees reservations, which live in memory.
		spent := r.InputTokens+r.OutputTokens > 0
		if spent && route != nil && route.ID == t.RouteID && effective(t, route).budget > 0 {
			budgeted[tokenHMAC] = true
		}
		apply = append(apply, valid{r, tokenHMAC, t})
	}
	for i := range apply {
		b.usage.apply(apply[i].tokenHMAC, apply[i].t, &apply[i].report)
	}
	if rejected > 0 {
		b.Logger().Warn("usage reports rejected; the others were applied", "rejected", rejected, "of", len(items), "first", firstRejection)
	}
	// A budget must survive a leader failover: the usage of tokens under a
	// budget is written now (off the request path: the proxy reports
	// asynchronously), the rest with the periodic flush. A write that fails
	// here is left to the periodic flush rather than failing the call,
	// whose usage is applied already: a retried call would count it twice.
	for tokenHMAC := range budgeted {
		if v, ok := b.usage.m.Load(tokenHMAC); ok {
			if err := b.flushToken(ctx, req.Storage, tokenHMAC, v.(*usage)); err != nil {
				b.Logger().Warn("cannot write budgeted usage now; the periodic flush will", "error", err)
			}
		}
	}
	return &logical.Response{Data: map[string]any{"applied": len(apply), "unknown_accessors": unknown, "rejected": rejected}}, nil
}

// reportItems checks the shape of a usage call as Vault decoded it from
// JSON: a list of 1 to MaxReports objects. Only a call of another shape is
// refused whole; each object is then a report of its own.
func reportItems(raw any) ([]map[string]any, error) {
	list, _ := raw.([]any)
	if len(list) == 0 {
		return nil, fmt.Errorf("%s is required: a list of usage reports", resolve.FieldReports)
	}
	if len(list) > resolve.MaxReports {
		return nil, fmt.Errorf("at most %d reports per call", resolve.MaxReports)
	}
	items := make([]map[string]any, len(list))
	for i, v := range list {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%s must be a list of objects (item %d is not)", resolve.FieldReports, i)
		}
		items[i] = m
	}
	return items, nil
}

// decodeReport reads and checks one report.
func decodeReport(item map[string]any) (resolve.UsageReport, error) {
	var r resolve.UsageReport
	js, err := json.Marshal(item)
	if err == nil {
		err = json.Unmarshal(js, &r)
	}
	if err != nil {
		return r, fmt.Errorf("not an object of an accessor and whole numbers")
	}
	return r, r.Check()
}

const usageHelp = `
phantom-proxy reports here, asynchronously and in batches, the LLM tokens
that requests used, as the upstream reported them (routes with a
usage_format): reports is a list of objects {accessor, input_tokens,
output_tokens, estimated, settled}, one per token since its last report;
estimated counts responses whose usage could not be read, charged at their
output cap (included in output_tokens); settled counts the requests admitted
under a token_budget that the report closes, each exactly once whatever
became of it: their reservations are released once the report's tokens are
added.

Each report is applied on its own: one that is not an object of an accessor
and whole numbers from 0 to 2^40 is rejected, and nothing of it applies (its
settled neither: those reservations hold until they expire), while the
others apply. Reports for accessors the engine does not know (tidied tokens)
are skipped. The answer counts them: applied, unknown_accessors, rejected.
Only a call of another shape (reports missing or empty, not a list of
objects, more than the maximum) is refused whole (400). A call that fails
otherwise applied nothing and may be sent again.

Counts are kept in memory and flushed to the token records and the route
totals about once a minute; the usage of tokens under a token_budget is
written at once, so a budget survives a leader failover. At resolve, a token
whose budget is spent is refused with budget_exhausted, and one whose
remaining budget is all reserved by requests in flight (each reserves its
max_output_tokens until settled, for at most an hour) with budget_pending
(429). Grant this path only to the proxy's policy (capability patch).
`
