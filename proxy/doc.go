// Package proxy is phantom-proxy: a thin, stateless reverse proxy that
// resolves the phantom token of every request through Vault, swaps in the
// real credential, forwards the call and scrubs the credential from whatever
// comes back.
//
// A request reads top to bottom in handler.go (Server.serve), each stage
// handing the next what it found:
//
//	admit   the target, the token, the client       -> admission
//	decide  the engine's answer, through Vault      -> grant
//	begin   the exchange: auth style, scrubber      -> exchange
//	limits  the body checked, the metering planned  (limits.go)
//	forward inject (the auth style), scrub          (reverse_proxy.go)
//	settle  what a metered request spent            (usage_settle.go)
//	audit   one record, whatever happened           (audit.go)
//
// A refusal at any stage is a *refusal, its status from the one table of
// reasons in internal/resolve, answered in one place (errors.go).
//
// The stages' own jobs are sub-packages: engine (the client of the engine,
// through Vault), inject (one type per auth style), scrub (the scrubber),
// metering (LLM limits and usage) and forward (forward-proxy mode's CA,
// tunnels and TLS). Here, beside the pipeline: the server and its listeners
// (server.go), the request-target rules (target.go), where agents put the
// token (extract.go), what never goes upstream or comes back unread
// (upstream_guard.go, charset.go, body_override.go), the unknown-token limit
// (unknown_limit.go), a CONNECT's admission (forward_connect.go,
// forward_tunnel.go), the audit log and metrics.
package proxy
