#!/usr/bin/env bash
# The Phantom engine, end to end, from nothing: a real Vault dev server, the
# real plugin binary, a route, a phantom token, resolve allowed and denied, and
# revocation. Exits non-zero if anything does not behave as shown.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
port=${PHANTOM_DEMO_VAULT_PORT:-18200}
work=$(mktemp -d)
vault_pid=""

cleanup() {
  if [[ -n "$vault_pid" ]]; then
    kill -TERM "$vault_pid" 2>/dev/null || true
    wait "$vault_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

if [[ -t 1 ]]; then bold=$'\033[1m' plain=$'\033[0m'; else bold="" plain=""; fi
step() { printf '\n%s== %s%s\n' "$bold" "$*" "$plain"; }
fail() { printf '\nDEMO FAILED: %s\n' "$*" >&2; exit 1; }

step "Building the plugin and finding Vault"
make -C "$root" --no-print-directory build
vault=$("$root/scripts/vault.sh")
"$vault" version

if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  fail "port $port is in use; set PHANTOM_DEMO_VAULT_PORT to a free port"
fi

step "Starting a Vault dev server on 127.0.0.1:$port"
mkdir -p "$work/plugins"
cp "$root/bin/vault-plugin-secrets-phantom" "$work/plugins/"
HOME=$work "$vault" server -dev -dev-root-token-id=root -dev-no-store-token \
  -dev-listen-address="127.0.0.1:$port" -dev-plugin-dir="$work/plugins" >"$work/vault.log" 2>&1 &
vault_pid=$!
export VAULT_ADDR="http://127.0.0.1:$port" VAULT_TOKEN=root HOME=$work
for _ in $(seq 1 100); do
  "$vault" status >/dev/null 2>&1 && break
  kill -0 "$vault_pid" 2>/dev/null || { cat "$work/vault.log"; fail "vault exited"; }
  sleep 0.1
done
"$vault" status >/dev/null || fail "vault did not start"
v() { printf '$ vault %s\n' "$*"; "$vault" "$@"; }

step "Registering the plugin by SHA-256 and mounting it at phantom/"
sha=$(sha256sum "$work/plugins/vault-plugin-secrets-phantom" | cut -d' ' -f1)
v plugin register -sha256="$sha" secret vault-plugin-secrets-phantom
v secrets enable -path=phantom vault-plugin-secrets-phantom

step "Security team: register a route holding the real key"
real_key="sk_live_demo_$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
echo "\$ vault write phantom/routes/stripe-customers upstream=https://api.stripe.com allowed_paths='/v1/customers/**' allowed_methods=GET credential=sk_live_demo_..."
"$vault" write phantom/routes/stripe-customers \
  upstream=https://api.stripe.com \
  allowed_paths='/v1/customers/**' \
  allowed_methods=GET \
  credential="$real_key"
v read phantom/routes/stripe-customers
"$vault" read phantom/routes/stripe-customers | grep -q "$real_key" && fail "a route read showed the key"

step "CI: mint a phantom token (a Vault lease)"
echo "\$ vault read phantom/token/stripe-customers ttl=1h"
lease=$("$vault" read phantom/token/stripe-customers ttl=1h)
token=$(awk '$1 == "token" {print $2}' <<<"$lease")
lease_id=$(awk '$1 == "lease_id" {print $2}' <<<"$lease")
sed -E 's/(phm_[A-Za-z0-9]{6})[A-Za-z0-9]+/\1.../' <<<"$lease"
[[ "$token" == phm_* && -n "$lease_id" ]] || fail "no token minted"
echo "export STRIPE_API_KEY=${token:0:10}...   # all the agent ever holds"

resolve() {
  "$vault" write -field="$1" phantom/resolve token="$token" method="$2" path="$3" client_ip=127.0.0.1
}

step "The proxy's question: may this token GET /v1/customers/cus_123?"
allowed=$(resolve allowed GET /v1/customers/cus_123)
echo "allowed=$allowed (the proxy would now inject the real key and forward)"
[[ "$allowed" == true ]] || fail "an in-scope request was denied"
[[ "$(resolve credential GET /v1/customers/cus_123)" == "$real_key" ]] || fail "resolve did not return the route's key"

step "Out of scope: DELETE /v1/customers/cus_123 and GET /v1/charges"
echo "reason=$(resolve reason DELETE /v1/customers/cus_123)"
[[ "$(resolve reason DELETE /v1/customers/cus_123)" == method_not_allowed ]] || fail "DELETE was not refused"
echo "reason=$(resolve reason GET /v1/charges)"
[[ "$(resolve reason GET /v1/charges)" == path_not_allowed ]] || fail "/v1/charges was not refused"
echo "reason=$(resolve reason GET /v1/customers/%2e%2e/charges)   (encoded dot segments)"
[[ "$(resolve reason GET /v1/customers/%2e%2e/charges)" == bad_request ]] || fail "an encoded traversal was not refused"

step "Operator: revoke the lease; the very next resolve is refused"
v lease revoke "$lease_id"
for _ in $(seq 1 50); do
  [[ "$(resolve reason GET /v1/customers/cus_123 2>/dev/null)" == revoked ]] && break
  sleep 0.1
done
echo "reason=$(resolve reason GET /v1/customers/cus_123)"
[[ "$(resolve reason GET /v1/customers/cus_123)" == revoked ]] || fail "a revoked token still resolves"

step "Demo complete"
echo "The agent held only a scoped, revocable phantom token; the real key stayed in Vault."
