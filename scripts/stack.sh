# Shared by demo.sh and dev.sh: start a local Phantom stack on loopback (a
# Vault dev server with the plugin, bootstrap, a demo upstream, phantom-proxy)
# and stop exactly the processes it started. Source it; do not run it.

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
work=$(mktemp -d)
pids=()

stack_stop() {
  local pid
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  pids=()
  rm -rf "$work"
}

fail() { printf '\nFAILED: %s\n' "$*" >&2; exit 1; }

# free_port BASE [SPAN]: the first port from BASE with SPAN free ports in a row.
free_port() {
  local p span=${2:-1} i
  for ((p = $1; p < $1 + 200; p++)); do
    for ((i = 0; i < span; i++)); do
      (exec 3<>"/dev/tcp/127.0.0.1/$((p + i))") 2>/dev/null && continue 2
    done
    echo "$p"
    return
  done
  fail "no free port near $1"
}

wait_for() { # wait_for WHAT CMD...: up to 20 s
  local what=$1 i
  shift
  for ((i = 0; i < 200; i++)); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  fail "$what did not come up"
}

http_ok() { curl -fsS -o /dev/null "$1"; }

stack_start() {
  command -v curl >/dev/null || fail "curl is needed (apt-get install curl)"
  make -C "$root" --no-print-directory build >/dev/null || fail "make build failed"
  go build -C "$root" -o "$root/bin/demo-upstream" ./scripts/demo-upstream || fail "building the demo upstream failed"
  vault=$("$root/scripts/vault.sh") || fail "no Vault binary"

  vault_port=$(free_port "${PHANTOM_VAULT_PORT:-18200}" 2) # Vault also takes port+1
  upstream_port=$(free_port 18300)
  proxy_port=$(free_port "${PHANTOM_PROXY_PORT:-18080}")
  admin_port=$(free_port $((proxy_port + 10)))

  mkdir -p "$work/plugins" "$work/home"
  HOME=$work/home "$vault" server -dev -dev-root-token-id=root -dev-no-store-token \
    -dev-listen-address="127.0.0.1:$vault_port" -dev-plugin-dir="$work/plugins" >"$work/vault.log" 2>&1 &
  pids+=($!)
  export VAULT_ADDR="http://127.0.0.1:$vault_port" VAULT_TOKEN=root
  wait_for "Vault" "$vault" status

  VAULT=$vault PHANTOM_PLUGIN_DIR=$work/plugins PHANTOM_OUT_DIR=$work \
    PHANTOM_PROXY_URL="http://127.0.0.1:$proxy_port" "$root/bootstrap/bootstrap.sh" >"$work/bootstrap.log" 2>&1 \
    || { cat "$work/bootstrap.log"; fail "bootstrap failed"; }

  real_key="sk_live_demo_$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
  DEMO_UPSTREAM_KEY=$real_key "$root/bin/demo-upstream" -listen="127.0.0.1:$upstream_port" >"$work/upstream.log" 2>&1 &
  pids+=($!)
  upstream="http://127.0.0.1:$upstream_port"
  wait_for "the demo upstream" curl -s -o /dev/null "$upstream/"

  audit_log=$work/audit.log
  "$root/bin/phantom-proxy" -vault-addr="$VAULT_ADDR" -role-id-file="$work/role_id" -secret-id-file="$work/secret_id" \
    -listen="127.0.0.1:$proxy_port" -admin-listen="127.0.0.1:$admin_port" -audit-file="$audit_log" >"$work/proxy.log" 2>&1 &
  pids+=($!)
  proxy="http://127.0.0.1:$proxy_port"
  wait_for "phantom-proxy" http_ok "http://127.0.0.1:$admin_port/readyz"
}
