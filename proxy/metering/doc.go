// Package metering is what the proxy enforces of a grant's LLM limits
// (resolve.Limits) and how it measures what a request spent, as functions
// of bytes: no HTTP exchange, no proxy types. Package proxy runs it around
// each forwarded request.
//
// Before forwarding (PlanFor, then CheckBody): a request with a body goes
// only to an endpoint the route's usage format is known to cap and meter;
// a model rule is checked against the model the upstream will run (the
// body's, or a Gemini path's, never one a query or an Azure deployment
// could override); a body asking above the output cap is refused, one
// naming none gets the cap inserted, and under a budget a stream is made
// to report its usage. A refusal is a Refusal: a reason of resolve's one
// table, whose status the proxy answers with.
//
// A request that asks for several completions (n, best_of, a list of
// prompts, Gemini's candidateCount, a prediction) is refused under a cap or
// a budget: the engine reserves one output cap per request and the cap
// bounds one completion, so k completions could spend k caps.
//
// After forwarding (Tap): the usage the upstream reports is read from the
// response as it streams to the agent, by a scanner that follows only the
// few containers on the way to the usage object and counts the nesting of
// everything else. The usage is found after JSON of any depth (a tools
// schema echoed back, a tool input the model wrote) with memory that does
// not grow with it, and nothing inside such a value is taken for usage. A
// UsageReporter adds up what was measured per token and reports it to the
// engine in batches.
package metering
