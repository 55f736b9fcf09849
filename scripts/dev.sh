#!/usr/bin/env bash
# A local Phantom to develop against: a Vault dev server with the plugin,
# phantom-proxy, a demo API and a sample route, in the foreground. Prints the
# exports an agent needs; Ctrl-C stops everything it started.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/stack.sh"
trap stack_stop EXIT
trap 'exit 0' INT TERM

stack_start
"$vault" write phantom/routes/demo-api upstream="$upstream" allowed_paths='/v1/customers/**,/v1/debug/*' \
  allowed_methods=GET,POST credential="$real_key" >/dev/null
token=$("$vault" read -field=token phantom/token/demo-api ttl=8h)

cat <<INFO
Phantom is running (logs and state in $work):
  Vault          $VAULT_ADDR   (root token: root)
  phantom-proxy  $proxy   (admin: http://127.0.0.1:$admin_port/metrics, /readyz)
  demo API       $upstream   (accepts only the real key, which only Vault holds)
  audit log      $audit_log

For an admin shell:
  export VAULT_ADDR=$VAULT_ADDR VAULT_TOKEN=root

For an agent (route demo-api: GET and POST on /v1/customers/**, GET on /v1/debug/*):
  export DEMO_API_KEY=$token
  export DEMO_BASE_URL=$proxy
  curl -H "Authorization: Bearer \$DEMO_API_KEY" \$DEMO_BASE_URL/v1/customers

Mint more with: vault read -field=token phantom/token/demo-api ttl=1h
Ctrl-C stops everything.
INFO
wait "${pids[@]}"
