package proxy

import (
	"errors"
	"net/http"

	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/proxy/metering"
)

// Limits the engine hands down with an allowed answer (resolve.Limits) that
// the proxy enforces on the request itself: the model allow-list, the
// per-request output cap, and, under a budget, that the response's usage can
// be measured. Only a request whose grant carries such a limit pays for
// reading its body; every other request takes the nil check in ServeHTTP.
// What is checked, and how usage is read, is package metering's; here is
// the exchange it is run on.

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

// applyLimits enforces ex.grant.Limits on out before it is forwarded: it
// plans what to check and whether to meter, reads and checks the body when
// a limit needs it, forwards the body with the cap or usage reporting
// inserted, and sets ex.meter when the response's usage is to be charged.
func applyLimits(out *http.Request, ex *exchange, mem *bodyMemory) *refusal {
	l := ex.grant.Limits
	plan, mref := metering.PlanFor(metering.Request{Method: out.Method, ContentLength: out.ContentLength, Path: ex.path, RawQuery: ex.rawQuery}, l)
	if mref != nil {
		return meteringRefusal(mref)
	}
	ex.endpoint = plan.Endpoint
	if plan.Meter {
		ex.meter = &meter{route: ex.grant.Route, accessor: ex.grant.Accessor, format: l.UsageFormat, estimateOut: l.MaxOutputTokens}
	}
	if !plan.ReadBody {
		return nil
	}
	if len(contentCodings(out.Header)) > 0 {
		return badBody("a request body with a Content-Encoding cannot be checked against the token's limits: send it uncompressed")
	}
	raw, ref := mem.read(out, ex) // limits_body.go
	if ref != nil {
		return ref
	}
	body, mref := metering.CheckBody(raw, l, ex.path)
	if mref != nil {
		return meteringRefusal(mref)
	}
	if ex.meter != nil {
		ex.meter.estimate = true
		ex.meter.estimateIn = int64(len(raw))
		if ex.meter.estimateOut == 0 {
			ex.meter.estimateOut = body.Asked
		}
	}
	ex.hold(out, body.Forward)
	return nil
}

// badBody refuses a request body as malformed, saying why.
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
