#!/usr/bin/env bash
# A local model of the production layout, in the foreground: a 3-node Vault
# HA cluster with integrated Raft storage (one shared plugin directory, as
# identical nodes would have), Phantom bootstrapped on it, and two stateless
# phantom-proxy replicas, each given every node's address (-vault-addr with
# a comma-separated list: a call moves to another node only when the one it
# tried did not process it). Prints how to reach everything; Ctrl-C stops
# all it started. e2e/ha_test.go runs the same layout through a leader
# crash, e2e/multinode_test.go through a rolling restart.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/stack.sh"
trap stack_stop EXIT
trap 'exit 0' INT TERM

command -v python3 >/dev/null || fail "python3 is needed (apt-get install python3)"
build_phantom
find_vault
mkdir -p "$work/plugins" "$work/home"
export HOME=$work/home

addrs=()
base=${PHANTOM_HA_PORT:-18500}
for i in 1 2 3; do
  port=$(free_port "$base" 2) # API and cluster ports
  base=$((port + 2))
  start_raft_node "node$i" "$port" "$work/plugins" "${addrs[0]:-}"
  addrs+=("http://127.0.0.1:$port")
done

init=$(VAULT_ADDR=${addrs[0]} "$vault" operator init -key-shares=1 -key-threshold=1 -format=json) \
  || fail "could not initialise the cluster"
unseal_key=$(json_eval 'd["unseal_keys_b64"][0]' <<<"$init")
root_token=$(json_eval 'd["root_token"]' <<<"$init")
for i in 0 1 2; do
  wait_for "unsealing node $((i + 1))" env VAULT_ADDR="${addrs[$i]}" "$vault" operator unseal "$unseal_key"
done
export VAULT_ADDR=${addrs[0]} VAULT_TOKEN=$root_token
three_voters() {
  [[ $("$vault" operator raft list-peers -format=json | json_eval 'sum(s["voter"] for s in d["data"]["config"]["servers"])') == 3 ]]
}
wait_for "the Raft cluster" three_voters

bootstrap_phantom "$work/plugins"

all_addrs=$(IFS=,; echo "${addrs[*]}")
proxies=()
for i in 1 2; do
  port=$(free_port $((18600 + i * 10)))
  start_proxy "proxy-$i" "$all_addrs" "$port" "$((port + 1))" "$work/audit-$i.log"
  proxies+=("http://127.0.0.1:$port (knows all three nodes, admin :$((port + 1)))")
done

cat <<INFO
A 3-node Vault cluster with Phantom and two proxies is running (state in $work):
  Vault nodes   ${addrs[*]}
  proxies       ${proxies[0]}
                ${proxies[1]}
  unseal key and root token: in $work/init.json (dev use only)

  export VAULT_ADDR=${addrs[0]} VAULT_TOKEN=<root token from $work/init.json>
  vault operator raft list-peers

Planned restarts: the standbys first, then \`vault operator step-down\` on the
active node before restarting it (docs/operations.md, Losing the active node).

Ctrl-C stops everything.
INFO
printf '%s\n' "$init" >"$work/init.json"
chmod 600 "$work/init.json"
wait "${pids[@]}"
