// Package engine is phantom-proxy's client of the Phantom engine: the one
// place that talks to Vault. Client is all the proxy asks: Resolve (may this
// token make this request?), CheckTunnel (may this CONNECT open a tunnel?),
// ReportUsage (the LLM usage measured) and Ready (for /readyz). Vault is the
// real client (New); enginetest.Engine plays the engine in tests.
//
// AppRole (session.go): the client logs in with a role_id file and a
// secret_id file, or a response-wrapped secret_id whose creation path it
// checks before unwrapping; it renews its token, logs in again when renewal
// ends, and on a 403 logs in once, de-duplicated across calls, as Vault
// Agent and Vault Proxy do.
//
// Calls (http_calls.go): PATCH to the engine's paths over plain net/http,
// with a short deadline and no retries, since an agent waits on each; with
// X-Vault-Forward: active-node, so that no performance standby answers
// before it has seen a revocation.
//
// Batching (batch.go): at most Config.Concurrency calls are in flight;
// requests that find them all busy queue and go together in the next call,
// each still getting its own decision; past a bounded queue a request is
// shed with ErrOverloaded.
//
// Failover (nodes.go): with several Vault addresses, a call moves to
// another node only when the node provably did not process it (the dial
// failed, sealed, a standby without an active node): a call that may have
// reached the engine is never repeated, since a num_uses token would lose
// a use.
//
// Fail closed: every error means no decision, and the proxy answers 503.
// Nothing here caches a decision: revocation bites on the next request.
package engine
