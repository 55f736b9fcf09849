#!/usr/bin/env bash
# The one way a local Phantom stack starts, on loopback: find Vault, start it
# (a dev server or Raft nodes), bootstrap Phantom, start phantom-proxy, and
# stop exactly the processes it started. demo.sh, dev.sh, bench.sh and ha.sh
# source it; the e2e harness (e2e/harness) runs its commands, so the proxy's
# command line and Vault's configuration are written here only:
#
#   scripts/stack.sh proxy VAULT_ADDR ROLE_ID_FILE SECRET_ID_FILE LISTEN ADMIN_LISTEN AUDIT_FILE [FLAG...]
#       exec phantom-proxy ($PHANTOM_PROXY_BIN, default bin/phantom-proxy)
#   scripts/stack.sh vault-dev LISTEN PLUGIN_DIR
#       exec a Vault dev server (root token "root")
#   scripts/stack.sh raft-config NODE_ID DIR PORT PLUGIN_DIR [LEADER_ADDR]
#       print a Raft server's config (API on PORT, cluster on PORT+1, data in DIR/raft)
#
# Vault is scripts/vault.sh's: $VAULT_BIN, vault on PATH, or the pinned build.

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

fail() { printf '\nFAILED: %s\n' "$*" >&2; exit 1; }

# find_vault sets $vault, building the pinned Vault once if there is none.
find_vault() {
  vault=$("$root/scripts/vault.sh") || fail "no Vault binary"
}

build_phantom() {
  make -C "$root" --no-print-directory build >/dev/null || fail "make build failed"
}

# free_port BASE [SPAN]: the first port from BASE with SPAN free ports in a
# row, none of them one this stack picked already but has not bound yet
# (another stack on the default ports would otherwise make two of ours
# pick the same one). It records what it picks in $work/ports (free_port
# runs in a subshell, so a file rather than a variable).
free_port() {
  local p span=${2:-1} i
  for ((p = $1; p < $1 + 200; p++)); do
    for ((i = 0; i < span; i++)); do
      grep -qx "$((p + i))" "$work/ports" 2>/dev/null && continue 2
      (exec 3<>"/dev/tcp/127.0.0.1/$((p + i))") 2>/dev/null && continue 2
    done
    for ((i = 0; i < span; i++)); do echo "$((p + i))"; done >>"${work:?}/ports"
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

# json_eval EXPR: evaluates a Python expression over the JSON on stdin
# (bound to d), e.g. json_eval 'd["root_token"]'. python3 is on every
# Debian machine; jq is not.
json_eval() {
  python3 -c 'import json, sys; d = json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"
}

vault_dev() { # vault_dev LISTEN PLUGIN_DIR
  exec "$vault" server -dev -dev-root-token-id=root -dev-no-store-token \
    -dev-listen-address="$1" -dev-plugin-dir="$2"
}

raft_config() { # raft_config NODE_ID DIR PORT PLUGIN_DIR [LEADER_ADDR]
  local node=$1 dir=$2 port=$3 plugins=$4 join=""
  [[ -n "${5:-}" ]] && join="retry_join { leader_api_addr = \"$5\" }"
  cat <<HCL
storage "raft" {
  path    = "$dir/raft"
  node_id = "$node"
  # Raft's timeouts x1, not Vault's default x5: standbys call an election
  # about 3 s (not 15 s) after the active node stops answering, so an
  # unplanned loss of the active node costs seconds (docs/operations.md).
  performance_multiplier = 1
  $join
}
listener "tcp" {
  address         = "127.0.0.1:$port"
  cluster_address = "127.0.0.1:$((port + 1))"
  tls_disable     = true
}
api_addr         = "http://127.0.0.1:$port"
cluster_addr     = "http://127.0.0.1:$((port + 1))"
plugin_directory = "$plugins"
disable_mlock    = true
HCL
}

# run_proxy VAULT_ADDR ROLE_ID_FILE SECRET_ID_FILE LISTEN ADMIN_LISTEN AUDIT_FILE [FLAG...]:
# the proxy's command line, for every local stack and the e2e harness.
run_proxy() {
  local vault_addr=$1 role_id=$2 secret_id=$3 listen=$4 admin=$5 audit=$6
  shift 6
  exec "${PHANTOM_PROXY_BIN:-$root/bin/phantom-proxy}" -vault-addr="$vault_addr" \
    -role-id-file="$role_id" -secret-id-file="$secret_id" \
    -listen="$listen" -admin-listen="$admin" -audit-file="$audit" "$@"
}

# Run as a command (by the e2e harness): do that one thing.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  set -euo pipefail
  cmd=${1:-}
  shift || true
  case $cmd in
    proxy) run_proxy "$@" ;;
    vault-dev) find_vault && vault_dev "$@" ;;
    raft-config) raft_config "$@" ;;
    *) echo "usage: see the header of $0" >&2; exit 2 ;;
  esac
  exit
fi

# Sourced: a work directory and the processes started, for stack_stop.
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

# start_dev_vault PORT: a Vault dev server (it also takes PORT+1), its
# address and root token exported for the vault CLI.
start_dev_vault() {
  mkdir -p "$work/plugins" "$work/home"
  (export HOME=$work/home && vault_dev "127.0.0.1:$1" "$work/plugins") >"$work/vault.log" 2>&1 &
  pids+=($!)
  export VAULT_ADDR="http://127.0.0.1:$1" VAULT_TOKEN=root
  wait_for "Vault" "$vault" status
}

# start_raft_node NODE_ID PORT PLUGIN_DIR [LEADER_ADDR]: a Raft server in
# $work/NODE_ID, up but not initialised or unsealed.
start_raft_node() {
  local dir=$work/$1
  mkdir -p "$dir/raft"
  raft_config "$1" "$dir" "$2" "$3" "${4:-}" >"$dir/vault.hcl"
  "$vault" server -config="$dir/vault.hcl" >"$dir/vault.log" 2>&1 &
  pids+=($!)
  wait_for "Vault $1" curl -s -o /dev/null "http://127.0.0.1:$2/v1/sys/health"
}

# bootstrap_phantom PLUGIN_DIR [VAR=VALUE...]: bootstrap/bootstrap.sh against
# $VAULT_ADDR; the proxy's role_id and secret_id go to $work.
bootstrap_phantom() {
  env VAULT="$vault" PHANTOM_PLUGIN_DIR="$1" PHANTOM_OUT_DIR="$work" "${@:2}" \
    "$root/bootstrap/bootstrap.sh" >"$work/bootstrap.log" 2>&1 \
    || { cat "$work/bootstrap.log"; fail "bootstrap failed"; }
}

# start_proxy NAME VAULT_ADDR PORT ADMIN_PORT AUDIT_FILE [FLAG...]: phantom-proxy
# with the bootstrap's credentials, logging to $work/NAME.log, once it is ready.
start_proxy() {
  run_proxy "$2" "$work/role_id" "$work/secret_id" "127.0.0.1:$3" "127.0.0.1:$4" "$5" "${@:6}" >"$work/$1.log" 2>&1 &
  pids+=($!)
  wait_for "$1" http_ok "http://127.0.0.1:$4/readyz"
}

# start_forward_upstream: the demo API behind TLS as $tls_name with a CA of
# its own ($work/upstream-ca.pem), for the forward-proxy mode; sets
# $tls_upstream and the proxy flags that trust and reach it ($forward_flags).
start_forward_upstream() {
  go build -C "$root" -o "$root/bin/forward-upstream" ./scripts/forward-upstream || fail "building forward-upstream failed"
  local tls_port forward_port
  tls_port=$(free_port 18443)
  forward_port=$(free_port "${PHANTOM_FORWARD_PORT:-18081}")
  tls_name=demo-api.phantom.test
  "$root/bin/forward-upstream" -listen="127.0.0.1:$tls_port" -name="$tls_name" -backend="$upstream" \
    -ca-out="$work/upstream-ca.pem" >"$work/forward-upstream.log" 2>&1 &
  pids+=($!)
  wait_for "the TLS demo upstream" test -s "$work/upstream-ca.pem"
  tls_upstream="https://$tls_name:$tls_port"
  forward_proxy="http://127.0.0.1:$forward_port"
  # The name resolves nowhere but in the proxy, as curl --resolve would pin it.
  forward_flags=(-forward-listen="127.0.0.1:$forward_port" -forward-ca-generate
    -upstream-ca-file="$work/upstream-ca.pem" -upstream-resolve="$tls_name:$tls_port=127.0.0.1:$tls_port")
}

# stack_start: the stack of demo.sh, dev.sh and bench.sh: a Vault dev server
# with Phantom, a demo upstream that accepts only $real_key, and phantom-proxy
# (with its forward-proxy listener too when PHANTOM_FORWARD=1).
stack_start() {
  command -v curl >/dev/null || fail "curl is needed (apt-get install curl)"
  build_phantom
  go build -C "$root" -o "$root/bin/demo-upstream" ./scripts/demo-upstream || fail "building the demo upstream failed"
  find_vault

  vault_port=$(free_port "${PHANTOM_VAULT_PORT:-18200}" 2) # Vault also takes port+1
  upstream_port=$(free_port 18300)
  proxy_port=$(free_port "${PHANTOM_PROXY_PORT:-18080}")
  admin_port=$(free_port $((proxy_port + 10)))

  start_dev_vault "$vault_port"
  bootstrap_phantom "$work/plugins" PHANTOM_PROXY_URL="http://127.0.0.1:$proxy_port"

  real_key="sk_live_demo_$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
  DEMO_UPSTREAM_KEY=$real_key "$root/bin/demo-upstream" -listen="127.0.0.1:$upstream_port" >"$work/upstream.log" 2>&1 &
  pids+=($!)
  upstream="http://127.0.0.1:$upstream_port"
  wait_for "the demo upstream" curl -s -o /dev/null "$upstream/"

  forward_flags=()
  if [[ ${PHANTOM_FORWARD:-} == 1 ]]; then
    start_forward_upstream
  fi

  audit_log=$work/audit.log
  start_proxy proxy "$VAULT_ADDR" "$proxy_port" "$admin_port" "$audit_log" "${forward_flags[@]}"
  proxy="http://127.0.0.1:$proxy_port"
  admin="http://127.0.0.1:$admin_port"
}
