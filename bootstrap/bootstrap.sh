#!/usr/bin/env bash
# Installs Phantom into a Vault, idempotently: registers the plugin binary by
# SHA-256 with its version, enables the mount (or moves it to this version and
# reloads it), writes the admin, issuer and proxy policies, enables AppRole if
# absent, creates the proxy's role, and writes its role_id and a fresh
# (optionally wrapped) secret_id to files readable only by their owner.
#
# Needs VAULT_ADDR and VAULT_TOKEN (a token allowed to manage plugins, mounts,
# policies and auth methods). Settings, all optional:
#
#   PHANTOM_PLUGIN_BIN        plugin binary               (bin/vault-plugin-secrets-phantom)
#   PHANTOM_PLUGIN_VERSION    version it reports           (v0.1.0)
#   PHANTOM_PLUGIN_DIR        Vault's plugin_directory; when set the binary is
#                             copied there as vault-plugin-secrets-phantom-<version>,
#                             otherwise it must already be there under its own name
#   PHANTOM_PLUGIN_ENV        space-separated KEY=VALUE pairs Vault sets in the
#                             plugin's environment (e.g. PHANTOM_PPROF_ADDR=127.0.0.1:6061)
#   PHANTOM_MOUNT             mount path                   (phantom)
#   PHANTOM_PROXY_URL         written to <mount>/config proxy_url when set
#   PHANTOM_ISSUER_ROUTES     comma-separated route patterns CI may mint for (*)
#   PHANTOM_OUT_DIR           where role_id and secret_id go (.)
#   PHANTOM_SECRET_ID_WRAP_TTL  wrap the secret_id for this long (e.g. 5m)
#   PHANTOM_SECRET_ID_TTL     secret_id lifetime           (0: until revoked)
#   PHANTOM_PROXY_CIDRS       comma-separated CIDRs the proxy may log in from
#   PHANTOM_PROXY_TOKEN_TTL / PHANTOM_PROXY_TOKEN_MAX_TTL   (1h / 24h)
#   VAULT                     vault CLI                    (vault on PATH, else scripts/vault.sh)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

die() { echo "bootstrap: $*" >&2; exit 1; }
say() { echo "bootstrap: $*"; }

vault=${VAULT:-$(command -v vault || true)}
[[ -n "$vault" ]] || vault=$("$root/scripts/vault.sh") || die "no vault CLI found"
[[ -n "${VAULT_ADDR:-}" ]] || die "VAULT_ADDR is not set"
[[ -n "${VAULT_TOKEN:-}" ]] || die "VAULT_TOKEN is not set"

plugin_bin=${PHANTOM_PLUGIN_BIN:-$root/bin/vault-plugin-secrets-phantom}
version=${PHANTOM_PLUGIN_VERSION:-v0.1.0}
mount=${PHANTOM_MOUNT:-phantom}
mount=${mount%/}
out_dir=${PHANTOM_OUT_DIR:-.}
plugin=vault-plugin-secrets-phantom

[[ -f "$plugin_bin" ]] || die "plugin binary $plugin_bin not found (run make build)"
[[ "$version" =~ ^v[0-9]+\.[0-9]+\.[0-9]+ ]] || die "PHANTOM_PLUGIN_VERSION=$version is not a semantic version like v1.2.3"
[[ "$mount" =~ ^[A-Za-z0-9_/-]+$ ]] || die "PHANTOM_MOUNT=$mount is not a valid mount path"
issuer_routes=${PHANTOM_ISSUER_ROUTES:-*}
set -f # route patterns hold globs meant for Vault, not for the shell
for pattern in ${issuer_routes//,/ }; do
  [[ "$pattern" =~ ^[A-Za-z0-9_.*+-]+$ ]] || die "PHANTOM_ISSUER_ROUTES: \"$pattern\" is not a route name pattern"
done
set +f
"$vault" token lookup >/dev/null 2>&1 || die "cannot use VAULT_TOKEN against $VAULT_ADDR (is Vault up and unsealed?)"

# 1. Register the plugin by SHA-256 and version.
command=$(basename "$plugin_bin")
if [[ -n "${PHANTOM_PLUGIN_DIR:-}" ]]; then
  command="$plugin-$version"
  install -m 0755 "$plugin_bin" "$PHANTOM_PLUGIN_DIR/$command.tmp"
  mv "$PHANTOM_PLUGIN_DIR/$command.tmp" "$PHANTOM_PLUGIN_DIR/$command"
fi
sha=$(sha256sum "$plugin_bin" | cut -d' ' -f1)
env_args=()
for kv in ${PHANTOM_PLUGIN_ENV:-}; do
  [[ "$kv" =~ ^[A-Z_][A-Z0-9_]*= ]] || die "PHANTOM_PLUGIN_ENV: \"$kv\" is not KEY=VALUE"
  env_args+=(-env "$kv")
done
"$vault" plugin register -sha256="$sha" -version="$version" -command="$command" "${env_args[@]}" secret "$plugin" >/dev/null \
  || die "registering the plugin failed"
say "registered $plugin $version (sha256 ${sha:0:12}...)"

# 2. Enable the mount, or move it to this version and reload it.
if "$vault" secrets list | awk '{print $1}' | grep -qx "$mount/"; then
  "$vault" secrets tune -plugin-version="$version" "$mount/" >/dev/null || die "tuning $mount/ to $version failed"
  "$vault" plugin reload -type=secret -plugin="$plugin" >/dev/null || die "reloading $plugin failed"
  say "mount $mount/ now runs $version (reloaded)"
else
  "$vault" secrets enable -path="$mount" -plugin-version="$version" "$plugin" >/dev/null || die "enabling $mount/ failed"
  say "enabled $plugin at $mount/"
fi
if [[ -n "${PHANTOM_PROXY_URL:-}" ]]; then
  "$vault" write "$mount/config" proxy_url="$PHANTOM_PROXY_URL" >/dev/null || die "writing $mount/config failed"
  say "advertising proxy_url=$PHANTOM_PROXY_URL"
fi

# 3. Policies, with the mount path filled in.
policy() { sed "s#\"phantom/#\"$mount/#" "$1"; }
policy "$here/policies/phantom-admin.hcl" | "$vault" policy write phantom-admin - >/dev/null
policy "$here/policies/phantom-proxy.hcl" | "$vault" policy write phantom-proxy - >/dev/null
# The issuer template's token block, once per route pattern.
{
  set -f
  for pattern in ${issuer_routes//,/ }; do
    policy "$here/policies/phantom-issuer.hcl" | sed -n '/token\/ROUTE_PATTERN/,/^}/p' | sed "s#ROUTE_PATTERN#$pattern#"
  done
  set +f
  policy "$here/policies/phantom-issuer.hcl" | sed -n '/config"/,/^}/p'
} | "$vault" policy write phantom-issuer - >/dev/null
say "wrote policies phantom-admin, phantom-issuer (routes: $issuer_routes), phantom-proxy"

# 4. AppRole for the proxy: a long-running client, so token_num_uses=0.
# No default policy: the proxy needs none of it, and Vault re-parses the
# default policy (it is templated) on every request of a token that holds it.
if ! "$vault" auth list | awk '{print $1}' | grep -qx "approle/"; then
  "$vault" auth enable approle >/dev/null || die "enabling AppRole failed"
  say "enabled the AppRole auth method"
fi
role_args=(token_policies=phantom-proxy token_no_default_policy=true token_num_uses=0
  token_ttl="${PHANTOM_PROXY_TOKEN_TTL:-1h}" token_max_ttl="${PHANTOM_PROXY_TOKEN_MAX_TTL:-24h}"
  secret_id_ttl="${PHANTOM_SECRET_ID_TTL:-0}" secret_id_num_uses=0)
if [[ -n "${PHANTOM_PROXY_CIDRS:-}" ]]; then
  role_args+=(secret_id_bound_cidrs="$PHANTOM_PROXY_CIDRS" token_bound_cidrs="$PHANTOM_PROXY_CIDRS")
fi
"$vault" write auth/approle/role/phantom-proxy "${role_args[@]}" >/dev/null || die "writing the AppRole role failed"

# 5. Credentials for the proxy, mode 0600.
mkdir -p "$out_dir"
umask 077
role_id=$("$vault" read -field=role_id auth/approle/role/phantom-proxy/role-id) || die "reading the role_id failed"
if [[ -n "${PHANTOM_SECRET_ID_WRAP_TTL:-}" ]]; then
  secret_id=$("$vault" write -wrap-ttl="$PHANTOM_SECRET_ID_WRAP_TTL" -f -field=wrapping_token auth/approle/role/phantom-proxy/secret-id) \
    || die "creating a wrapped secret_id failed"
  kind="wrapped secret_id (run the proxy with -secret-id-wrapped)"
else
  secret_id=$("$vault" write -f -field=secret_id auth/approle/role/phantom-proxy/secret-id) || die "creating a secret_id failed"
  kind="secret_id"
fi
printf '%s\n' "$role_id" >"$out_dir/role_id.tmp" && mv "$out_dir/role_id.tmp" "$out_dir/role_id"
printf '%s\n' "$secret_id" >"$out_dir/secret_id.tmp" && mv "$out_dir/secret_id.tmp" "$out_dir/secret_id"
chmod 0600 "$out_dir/role_id" "$out_dir/secret_id"
say "wrote $out_dir/role_id and a fresh $kind to $out_dir/secret_id (mode 0600)"
