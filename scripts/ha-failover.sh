#!/usr/bin/env bash
# ha-failover.sh [SIGNAL [RUNS]]: how long losing the active node costs.
# Starts scripts/ha.sh's layout (3 Raft nodes, 2 proxies given every node) on
# 127.0.0.1 from port $PHANTOM_HA_PORT (default 18700), then RUNS times (3):
# sends SIGNAL (KILL or TERM, default KILL) to the active node, prints how
# many ms until another node answers sys/health 200 and until each proxy
# serves a request again (polled every 100 ms), restarts the killed node and
# waits for three healthy voters. PM=5 runs it with Vault's default
# performance_multiplier instead of stack.sh's 1. docs/operations.md has
# the numbers (Losing the active node).
set -euo pipefail
sig=${1:-KILL} runs=${2:-3}
source "$(dirname "${BASH_SOURCE[0]}")/stack.sh"
trap stack_stop EXIT
build_phantom
go build -C "$root" -o "$root/bin/demo-upstream" ./scripts/demo-upstream || fail "building the demo upstream failed"
find_vault
if [[ -n "${PM:-}" ]]; then
  eval "orig_$(declare -f raft_config)"
  raft_config() { orig_raft_config "$@" | sed "s/performance_multiplier = 1/performance_multiplier = $PM/"; }
fi
mkdir -p "$work/plugins" "$work/home"; export HOME=$work/home
now() { date +%s%3N; }
addrs=(); npid=()
base=${PHANTOM_HA_PORT:-18700}
for i in 1 2 3; do
  port=$((base + (i-1)*2))
  start_raft_node "node$i" "$port" "$work/plugins" "${addrs[0]:-}"
  npid+=("${pids[-1]}"); addrs+=("http://127.0.0.1:$port")
done
init=$(VAULT_ADDR=${addrs[0]} "$vault" operator init -key-shares=1 -key-threshold=1 -format=json)
key=$(json_eval 'd["unseal_keys_b64"][0]' <<<"$init"); tokn=$(json_eval 'd["root_token"]' <<<"$init")
for i in 0 1 2; do wait_for unseal env VAULT_ADDR="${addrs[$i]}" "$vault" operator unseal "$key"; done
export VAULT_ADDR=${addrs[0]} VAULT_TOKEN=$tokn
healthy3() { local out; out=$(VAULT_ADDR=$1 VAULT_CLIENT_TIMEOUT=5 timeout 6 "$vault" operator raft autopilot state -format=json 2>&1); [[ $(json_eval 'len([1 for s in d["Servers"].values() if s["Healthy"] and s["Status"] in ("voter","leader")])' <<<"$out" 2>/dev/null) == 3 ]] || { echo "$out" > "$work/ap.json"; false; }; }
for ((i=0;i<300;i++)); do healthy3 "${addrs[0]}" && break; sleep 0.2; done
bootstrap_phantom "$work/plugins"
realkey=sk_live_x$RANDOM
DEMO_UPSTREAM_KEY=$realkey "$root/bin/demo-upstream" -listen=127.0.0.1:$((base+50)) >"$work/up.log" 2>&1 & pids+=($!)
"$vault" write phantom/routes/demo upstream=http://127.0.0.1:$((base+50)) allowed_paths='/v1/customers/**,/v1/customers' allowed_methods=GET credential=$realkey >/dev/null
tok=$("$vault" read -field=token phantom/token/demo ttl=10h)
all=$(IFS=,; echo "${addrs[*]}")
prox=()
for i in 1 2; do p=$((base+60+i*2)); start_proxy "proxy$i" "$all" "$p" "$((p+1))" "$work/audit$i.log"; prox+=("http://127.0.0.1:$p"); done
code() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$@" || true; }
for i in 1 2; do [[ $(code -H "Authorization: Bearer $tok" "${prox[$((i-1))]}/v1/customers") == 200 ]] || { echo "proxy$i not serving"; cat "$work/proxy$i.log"; exit 1; }; done
for ((r=1;r<=runs;r++)); do
  act=-1
  for i in 0 1 2; do [[ $(code "${addrs[$i]}/v1/sys/health") == 200 ]] && act=$i; done
  sleep 3
  kids=$(pgrep -P "${npid[$act]}" || true) # its plugin processes, orphaned by a SIGKILL
  t0=$(now); kill -"$sig" "${npid[$act]}"
  elected=; served=(); exited=; last=""
  while :; do
    t=$(( $(now) - t0 ))
    [[ -z $exited ]] && ! kill -0 "${npid[$act]}" 2>/dev/null && exited=$t
    line=""
    for i in 0 1 2; do [[ $i == "$act" ]] && continue; c=$(code --max-time 1 "${addrs[$i]}/v1/sys/health"); line+="n$((i+1))=$c "
      [[ -z $elected && $c == 200 ]] && elected="$t(node$((i+1)))"; done
    for i in 0 1; do [[ -z ${served[$i]:-} && $(code --max-time 1 -H "Authorization: Bearer $tok" "${prox[$i]}/v1/customers") == 200 ]] && served[$i]=$t; done
    [[ $line != "$last" ]] && echo "  +${t}ms $line" && last=$line
    [[ -n $elected && -n ${served[0]:-} && -n ${served[1]:-} ]] && break
    (( t > 90000 )) && { echo "  TIMEOUT"; break; }
    sleep 0.1
  done
  echo "RUN $r SIG$sig killed node$((act+1)): process exited ${exited:-?}ms, new active ${elected:-none}ms, proxy1 ${served[0]:-none}ms, proxy2 ${served[1]:-none}ms"
  wait "${npid[$act]}" 2>/dev/null || true
  [[ -n $kids ]] && kill $kids 2>/dev/null || true
  "$vault" server -config="$work/node$((act+1))/vault.hcl" >>"$work/node$((act+1))/vault.log" 2>&1 & pids+=($!); npid[$act]=$!
  wait_for restart curl -s -o /dev/null "${addrs[$act]}/v1/sys/health"
  wait_for unseal env VAULT_ADDR="${addrs[$act]}" "$vault" operator unseal "$key"
  newact=${addrs[$(( (act+1)%3 ))]}
  for ((i=0;i<300;i++)); do for a in "${addrs[@]}"; do healthy3 "$a" 2>/dev/null && break 2; done; sleep 0.2; done
  echo "  after restart: $(( i*200 ))ms waiting for 3 healthy voters (i=$i)"; (( i >= 300 )) && head -c 1500 "$work/ap.json"
done

