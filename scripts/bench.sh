#!/usr/bin/env bash
# make bench: start a local stack (Vault dev server + plugin, phantom-proxy,
# the demo API) and measure Phantom against direct calls and a bare reverse
# proxy. Arguments go to scripts/bench (e.g. -duration=10s -conns=1,16,64, or
# -memory-run=10m for phantom-proxy's memory over a long run).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/stack.sh"
trap stack_stop EXIT

echo "bench: starting Vault, phantom-proxy and the demo API..."
PHANTOM_FORWARD=1 stack_start
"$vault" write phantom/routes/demo-api upstream="$upstream" allowed_paths='/v1/customers/**' \
  allowed_methods=GET credential="$real_key" >/dev/null
token=$("$vault" read -field=token phantom/token/demo-api ttl=2h)
# The same API with limits: a rate limit that never refuses and a budget
# (which needs a usage format), beside the plain token in the same run.
"$vault" write phantom/routes/demo-api-limits upstream="$upstream" allowed_paths='/v1/customers/**' \
  allowed_methods=GET credential="$real_key" usage_format=openai rate_limit=1000000000/1s \
  route_rate_limit=1000000000/1s token_budget=1000000000000 max_output_tokens=4096 >/dev/null
limits_token=$("$vault" read -field=token phantom/token/demo-api-limits ttl=2h)
# The same API signed with AWS SigV4 (the demo API takes its key as the
# secret access key): what signing each request again costs.
"$vault" write phantom/routes/demo-api-sigv4 upstream="$upstream" allowed_paths='/v1/customers/**' \
  allowed_methods=GET auth_type=aws_sigv4 access_key_id=AKIADEMOUPSTREAM0001 secret_access_key="$real_key" \
  region=us-east-1 service=s3 >/dev/null
sigv4_token=$("$vault" read -field=token phantom/token/demo-api-sigv4 ttl=2h)
# The forward-proxy mode beside reverse mode: one route to the same API
# behind TLS, reached through the reverse listener and through the tunnel.
"$vault" write phantom/routes/demo-tls upstream="$tls_upstream" allowed_paths='/v1/customers/**' \
  allowed_methods=GET credential="$real_key" >/dev/null
tls_token=$("$vault" read -field=token phantom/token/demo-tls ttl=2h)
curl -fsS -o "$work/phantom-ca.pem" "$admin/ca.pem"
# Resolve straight against Vault as phantom-proxy does: with a token from its
# own AppRole login.
resolve_token=$("$vault" write -field=token auth/approle/login role_id="$(cat "$work/role_id")" \
  secret_id="$(cat "$work/secret_id")")
proxy_pid=${pids[-1]} # started last

go build -C "$root" -o "$root/bin/phantom-bench" ./scripts/bench
DEMO_UPSTREAM_KEY=$real_key "$root/bin/phantom-bench" -upstream="$upstream" -proxy="$proxy" \
  -token="$token" -resolve-token="$resolve_token" -proxy-pid="$proxy_pid" -json="${BENCH_JSON:-$root/bench.json}" \
  -forward-proxy="$forward_proxy" -forward-ca="$work/phantom-ca.pem" -forward-target="$tls_upstream" -forward-token="$tls_token" -limits-token="$limits_token" -sigv4-token="$sigv4_token" "$@"
