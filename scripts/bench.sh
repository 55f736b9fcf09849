#!/usr/bin/env bash
# make bench: start a local stack (Vault dev server + plugin, phantom-proxy,
# the demo API) and measure Phantom against direct calls and a bare reverse
# proxy. Arguments go to scripts/bench (e.g. -duration=10s -conns=1,16,64, or
# -memory-run=10m for phantom-proxy's memory over a long run).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/stack.sh"
trap stack_stop EXIT

echo "bench: starting Vault, phantom-proxy and the demo API..."
stack_start
"$vault" write phantom/routes/demo-api upstream="$upstream" allowed_paths='/v1/customers/**' \
  allowed_methods=GET credential="$real_key" >/dev/null
token=$("$vault" read -field=token phantom/token/demo-api ttl=2h)
# Resolve straight against Vault as phantom-proxy does: with a token from its
# own AppRole login.
resolve_token=$("$vault" write -field=token auth/approle/login role_id="$(cat "$work/role_id")" \
  secret_id="$(cat "$work/secret_id")")
proxy_pid=${pids[2]}

go build -C "$root" -o "$root/bin/phantom-bench" ./scripts/bench
DEMO_UPSTREAM_KEY=$real_key "$root/bin/phantom-bench" -upstream="$upstream" -proxy="$proxy" \
  -token="$token" -resolve-token="$resolve_token" -proxy-pid="$proxy_pid" -json="${BENCH_JSON:-$root/bench.json}" "$@"
