#!/usr/bin/env bash
# Phantom's story from nothing: a real Vault with the plugin, phantom-proxy,
# and an API that accepts only the real key. Exits non-zero if anything does
# not behave as shown.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/stack.sh"
trap stack_stop EXIT

if [[ -t 1 ]]; then bold=$'\033[1m' plain=$'\033[0m'; else bold="" plain=""; fi
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }
mask() { sed -E "s/$real_key/sk_live_demo_.../g; s/(phm_[A-Za-z0-9]{6})[A-Za-z0-9]+/\1.../g"; }
v() { printf '$ vault %s\n' "$*" | mask; "$vault" "$@" | mask; }

# agent_call METHOD PATH: what an agent's SDK does, with only the phantom token.
agent_call() {
  printf '$ curl -X %s -H "Authorization: Bearer $DEMO_API_KEY" $DEMO_BASE_URL%s\n' "$1" "$2"
  status=$(curl -sS -o "$work/body" -w '%{http_code}' -X "$1" -H "Authorization: Bearer $DEMO_API_KEY" "$DEMO_BASE_URL$2")
  echo "HTTP $status $(cat "$work/body")" | mask
}

step "Starting a Vault dev server, bootstrapping Phantom, starting phantom-proxy"
PHANTOM_FORWARD=1 stack_start
sed 's/^/  /' "$work/bootstrap.log"
echo "  Vault $VAULT_ADDR, phantom-proxy $proxy, demo API $upstream (accepts only the real key)"

step "Security team: register a route holding the real key"
echo "\$ vault write phantom/routes/demo-api upstream=$upstream allowed_paths='/v1/customers/**,/v1/debug/*' allowed_methods=GET credential=sk_live_demo_..."
"$vault" write phantom/routes/demo-api upstream="$upstream" allowed_paths='/v1/customers/**,/v1/debug/*' \
  allowed_methods=GET credential="$real_key" | mask
v read phantom/routes/demo-api

step "CI: mint a phantom token for the agent (a Vault lease)"
lease=$("$vault" read phantom/token/demo-api ttl=1h)
echo '$ vault read phantom/token/demo-api ttl=1h'
mask <<<"$lease"
DEMO_API_KEY=$(awk '$1 == "token" {print $2}' <<<"$lease")
lease_id=$(awk '$1 == "lease_id" {print $2}' <<<"$lease")
DEMO_BASE_URL=$("$vault" read -field=proxy_url phantom/config)
echo '$ export DEMO_API_KEY=$(vault read -field=token phantom/token/demo-api ttl=1h)'
echo '$ export DEMO_BASE_URL=$(vault read -field=proxy_url phantom/config)'

step "The agent's whole environment: a phantom token and a base URL"
agent_env=$(env -i DEMO_API_KEY="$DEMO_API_KEY" DEMO_BASE_URL="$DEMO_BASE_URL" env)
mask <<<"$agent_env"
grep -q "$real_key" <<<"$agent_env" && fail "the agent's environment holds the real key"
echo "(the real key appears nowhere in it)"

step "An allowed call: the proxy swaps in the real key"
agent_call GET /v1/customers
[[ $status == 200 ]] || fail "the allowed call got $status"

step "The API echoes the key it received; the agent sees it masked"
agent_call GET /v1/debug/whoami
[[ $status == 200 ]] || fail "the echo call got $status"
grep -q "$real_key" "$work/body" && fail "the real key reached the agent"
grep -q '\*\*\*\*' "$work/body" || fail "the echoed key was not masked"

step "Out of scope: the proxy refuses before anything reaches the API"
agent_call DELETE /v1/customers/cus_123
[[ $status == 403 ]] || fail "DELETE got $status, want 403"
agent_call GET /v1/charges
[[ $status == 403 ]] || fail "/v1/charges got $status, want 403"

step "Operator: revoke the lease; the very next call is refused"
v lease revoke -sync "$lease_id"
agent_call GET /v1/customers
[[ $status == 401 ]] || fail "the revoked token got $status, want 401"

step "Forward-proxy mode: tools that cannot change a base URL (git, curl scripts, CLIs) use HTTPS_PROXY"
echo "  The same API behind TLS as $tls_upstream (a name only the proxy can reach)."
echo "\$ vault write phantom/routes/demo-tls upstream=$tls_upstream allowed_paths='/v1/customers/**,/v1/debug/*' allowed_methods=GET credential=sk_live_demo_..."
"$vault" write phantom/routes/demo-tls upstream="$tls_upstream" allowed_paths='/v1/customers/**,/v1/debug/*' \
  allowed_methods=GET credential="$real_key" | mask
tls_lease=$("$vault" read phantom/token/demo-tls ttl=1h)
PHANTOM_TOKEN=$(awk '$1 == "token" {print $2}' <<<"$tls_lease")
tls_lease_id=$(awk '$1 == "lease_id" {print $2}' <<<"$tls_lease")
echo '$ export PHANTOM_TOKEN=$(vault read -field=token phantom/token/demo-tls ttl=1h)'
echo "\$ eval \"\$(phantom-proxy env -forward $forward_proxy -admin $admin -ca-file phantom-ca.pem)\""
exports=$(cd "$work" && "$root/bin/phantom-proxy" env -forward "$forward_proxy" -admin "$admin" -ca-file phantom-ca.pem) \
  || fail "phantom-proxy env failed"
sed 's/^/  /' <<<"$exports"
# forward_call URL: an unchanged curl, configured only by the environment.
# Sets connect (the proxy's answer to the CONNECT) and status (the API's,
# 000 when the CONNECT was refused).
forward_call() {
  printf '$ curl %s\n' "$1"
  : >"$work/body"
  read -r connect status < <(env -i PATH="$PATH" PHANTOM_TOKEN="$PHANTOM_TOKEN" bash -c "$exports"'
    curl -sS -o "$0" -w "%{http_connect} %{http_code}\n" "$1"' "$work/body" "$1" 2>/dev/null || true)
  if [[ $connect == 200 ]]; then
    echo "HTTP $status $(cat "$work/body")" | mask
  else
    echo "CONNECT refused: HTTP $connect (nothing was sent to the host)"
  fi
}
forward_call "$tls_upstream/v1/customers"
[[ $status == 200 ]] || fail "the call through the forward proxy got $status"
forward_call "$tls_upstream/v1/debug/whoami"
grep -q "$real_key" "$work/body" && fail "the real key reached the agent through the tunnel"
grep -q '\*\*\*\*' "$work/body" || fail "the echoed key was not masked in the tunnel"
echo "  A host the token's route does not name: the engine refuses the CONNECT itself."
forward_call https://example.com/v1/customers
[[ $connect == 403 ]] || fail "a tunnel to example.com got $connect, want 403"
v lease revoke -sync "$tls_lease_id"
echo "  The lease revoked: the next CONNECT with that token is refused (407, a dead proxy credential)."
forward_call "$tls_upstream/v1/customers"
[[ $connect == 407 ]] || fail "the revoked token got CONNECT $connect, want 407"

step "phantom-proxy's audit log (one JSON line per request; accessors, never tokens)"
cat "$audit_log"
grep -q "$DEMO_API_KEY" "$audit_log" && fail "the audit log holds the token"
grep -q "$PHANTOM_TOKEN" "$audit_log" && fail "the audit log holds the forward-mode token"
grep -q "$real_key" "$audit_log" && fail "the audit log holds the real key"

step "Demo complete"
echo "The agent only ever held a scoped, revocable phantom token; the real key stayed in Vault."
