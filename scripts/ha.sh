#!/usr/bin/env bash
# A local model of the production layout, in the foreground: a 3-node Vault
# HA cluster with integrated Raft storage (one shared plugin directory, as
# identical nodes would have), Phantom bootstrapped on it, and two stateless
# phantom-proxy replicas, each talking to a different node. Prints how to
# reach everything; Ctrl-C stops all it started. e2e/ha_test.go runs the same
# layout through a leader crash.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/stack.sh"
trap stack_stop EXIT
trap 'exit 0' INT TERM

make -C "$root" --no-print-directory build >/dev/null || fail "make build failed"
vault=$("$root/scripts/vault.sh") || fail "no Vault binary"
mkdir -p "$work/plugins" "$work/home"
export HOME=$work/home

addrs=()
base=${PHANTOM_HA_PORT:-18500}
for i in 1 2 3; do
  port=$(free_port "$base" 2) # API and cluster ports
  base=$((port + 2))
  addr="http://127.0.0.1:$port"
  addrs+=("$addr")
  mkdir -p "$work/node$i/raft"
  join=""
  [[ $i -gt 1 ]] && join="retry_join { leader_api_addr = \"${addrs[0]}\" }"
  cat >"$work/node$i/vault.hcl" <<HCL
storage "raft" {
  path    = "$work/node$i/raft"
  node_id = "node$i"
  $join
}
listener "tcp" {
  address         = "127.0.0.1:$port"
  cluster_address = "127.0.0.1:$((port + 1))"
  tls_disable     = true
}
api_addr         = "$addr"
cluster_addr     = "http://127.0.0.1:$((port + 1))"
plugin_directory = "$work/plugins"
disable_mlock    = true
HCL
  "$vault" server -config="$work/node$i/vault.hcl" >"$work/node$i/vault.log" 2>&1 &
  pids+=($!)
  wait_for "Vault node $i" curl -s -o /dev/null "$addr/v1/sys/health"
done

init=$(VAULT_ADDR=${addrs[0]} "$vault" operator init -key-shares=1 -key-threshold=1 -format=json)
unseal_key=$(sed -n 's/.*"unseal_keys_b64": \[ *"\([^"]*\)".*/\1/p' <<<"$(tr -d '\n' <<<"$init")")
root_token=$(sed -n 's/.*"root_token": *"\([^"]*\)".*/\1/p' <<<"$(tr -d '\n' <<<"$init")")
[[ -n "$unseal_key" && -n "$root_token" ]] || fail "could not initialise the cluster"
for i in 0 1 2; do
  wait_for "unsealing node $((i + 1))" env VAULT_ADDR="${addrs[$i]}" "$vault" operator unseal "$unseal_key"
done
export VAULT_ADDR=${addrs[0]} VAULT_TOKEN=$root_token
wait_for "the Raft cluster" bash -c "[[ \$(\"$vault\" operator raft list-peers | grep -c ' true') == 3 ]]"

VAULT=$vault PHANTOM_PLUGIN_DIR=$work/plugins PHANTOM_OUT_DIR=$work "$root/bootstrap/bootstrap.sh" >"$work/bootstrap.log" 2>&1 \
  || { cat "$work/bootstrap.log"; fail "bootstrap failed"; }

proxies=()
for i in 1 2; do
  port=$(free_port $((18600 + i * 10)))
  "$root/bin/phantom-proxy" -vault-addr="${addrs[$i]}" -role-id-file="$work/role_id" -secret-id-file="$work/secret_id" \
    -listen="127.0.0.1:$port" -admin-listen="127.0.0.1:$((port + 1))" -audit-file="$work/audit-$i.log" >"$work/proxy-$i.log" 2>&1 &
  pids+=($!)
  wait_for "phantom-proxy $i" http_ok "http://127.0.0.1:$((port + 1))/readyz"
  proxies+=("http://127.0.0.1:$port (talks to ${addrs[$i]}, admin :$((port + 1)))")
done

cat <<INFO
A 3-node Vault cluster with Phantom and two proxies is running (state in $work):
  Vault nodes   ${addrs[*]}
  proxies       ${proxies[0]}
                ${proxies[1]}
  unseal key and root token: in $work/init.json (dev use only)

  export VAULT_ADDR=${addrs[0]} VAULT_TOKEN=<root token from $work/init.json>
  vault operator raft list-peers

Ctrl-C stops everything.
INFO
printf '%s\n' "$init" >"$work/init.json"
chmod 600 "$work/init.json"
wait "${pids[@]}"
