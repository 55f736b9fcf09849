#!/usr/bin/env bash
# Installs Phantom into a Vault, idempotently: registers the plugin binary by
# SHA-256 with its version, enables the mount (or moves it to this version and
# reloads it), writes the mount's admin, issuer and proxy policies, enables
# AppRole if absent, creates the mount's proxy role, and writes its role_id and
# a fresh (optionally wrapped) secret_id to files readable only by their owner.
#
#   bootstrap.sh             install or upgrade (all of the above)
#   bootstrap.sh secret-id   only a fresh secret_id (and the role_id) for one
#                            proxy replica of an installed mount, optionally
#                            destroying that replica's earlier ones
#
# Needs VAULT_ADDR and VAULT_TOKEN (a token allowed to manage plugins, mounts,
# policies and auth methods; for secret-id, one allowed to read the role's
# role-id and manage its secret-ids). Settings, all optional:
#
#   PHANTOM_PLUGIN_BIN        plugin binary               (bin/vault-plugin-secrets-phantom)
#   PHANTOM_PLUGIN_VERSION    version it reports           (what its -version prints)
#   PHANTOM_PLUGIN_DIR        Vault's plugin_directory; when set the binary is
#                             copied there as vault-plugin-secrets-phantom-<version>,
#                             otherwise it must already be there under its own name
#   PHANTOM_PLUGIN_ENV        space-separated KEY=VALUE pairs Vault sets in the
#                             plugin's environment (e.g. PHANTOM_PPROF_ADDR=127.0.0.1:6061)
#   PHANTOM_MOUNT             mount path                   (phantom)
#   PHANTOM_NAME              base of the policy and role names (the mount path,
#                             lower-cased, "/" as "-"): policies <name>-admin,
#                             <name>-issuer, <name>-proxy and the AppRole role
#                             <name>-proxy, so phantom-admin, ... for phantom/.
#                             Each mount gets its own; a name already used by
#                             another mount is refused.
#   PHANTOM_PROXY_URL         written to <mount>/config proxy_url when set
#   PHANTOM_ISSUER_ROUTES     comma-separated routes CI may mint for (*). Each is
#                             a route name (exactly that route), a name ending in
#                             "-*", "_*" or ".*" (every route whose name starts
#                             with what precedes the "*": team-a-* grants
#                             team-a-x and team-a-x-y, never team-admin), or "*"
#                             alone (every route). "*" anywhere else, and a "*"
#                             right after a letter or digit (team-a* would also
#                             grant team-admin), are refused.
#   PHANTOM_OUT_DIR           where role_id and secret_id go (.): a directory of
#                             yours that no one else can write to (it is created
#                             with mode 0700 if absent)
#   PHANTOM_SECRET_ID_WRAP_TTL  wrap the secret_id for this long (e.g. 5m)
#   PHANTOM_SECRET_ID_TTL     secret_id lifetime           (0: until destroyed);
#                             Vault deletes expired secret_ids within a minute
#   PHANTOM_REPLICA           the proxy replica this secret_id is for (recorded
#                             as its metadata phantom_replica); one per replica
#   PHANTOM_ROTATE_SECRET_ID  true: once the new secret_id is written, destroy
#                             the earlier secret_ids of the same PHANTOM_REPLICA
#                             (unset: every earlier secret_id of the role, refused
#                             while named replicas hold some)
#   PHANTOM_PROXY_CIDRS       comma-separated CIDRs the proxy may log in from
#   PHANTOM_PROXY_TOKEN_TTL / PHANTOM_PROXY_TOKEN_MAX_TTL   (1h / 24h)
#   VAULT                     vault CLI                    (vault on PATH, else scripts/vault.sh)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

die() { echo "bootstrap: $*" >&2; exit 1; }
say() { echo "bootstrap: $*"; }

action=${1:-install}
[[ "$action" == install || "$action" == secret-id ]] || die "unknown action \"$action\" (install or secret-id)"

vault=${VAULT:-$(command -v vault || true)}
[[ -n "$vault" ]] || vault=$("$root/scripts/vault.sh") || die "no vault CLI found"
[[ -n "${VAULT_ADDR:-}" ]] || die "VAULT_ADDR is not set"
[[ -n "${VAULT_TOKEN:-}" ]] || die "VAULT_TOKEN is not set"

plugin_bin=${PHANTOM_PLUGIN_BIN:-$root/bin/vault-plugin-secrets-phantom}
version=${PHANTOM_PLUGIN_VERSION:-}
mount=${PHANTOM_MOUNT:-phantom}
mount=${mount%/}
out_dir=${PHANTOM_OUT_DIR:-.}
plugin=vault-plugin-secrets-phantom
replica=${PHANTOM_REPLICA:-}
rotate=${PHANTOM_ROTATE_SECRET_ID:-false}

# Mount paths may nest (team-a/phantom) but not start, end or double a "/".
[[ "$mount" =~ ^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$ ]] || die "PHANTOM_MOUNT=$mount is not a valid mount path"
default_name=$(tr 'A-Z/' 'a-z-' <<<"$mount") # Vault lower-cases policy and role names
name=${PHANTOM_NAME:-$default_name}
[[ "$name" =~ ^[a-z0-9_][a-z0-9_.-]*$ ]] || die "PHANTOM_NAME=$name: use lower-case letters, digits, \"_\", \".\" and \"-\""
admin_policy=$name-admin issuer_policy=$name-issuer proxy_policy=$name-proxy role=$name-proxy
[[ -z "$replica" || "$replica" =~ ^[A-Za-z0-9_.-]+$ ]] || die "PHANTOM_REPLICA=$replica: use letters, digits, \"_\", \".\" and \"-\""
[[ "$rotate" == true || "$rotate" == false ]] || die "PHANTOM_ROTATE_SECRET_ID=$rotate is not true or false"

# Unset means every route; set but empty (a CI variable that came out empty)
# is refused rather than read as "*", as the engine refuses empty narrowing.
issuer_routes=${PHANTOM_ISSUER_ROUTES-*}
[[ -n "${issuer_routes//[, ]/}" ]] || die "PHANTOM_ISSUER_ROUTES is set but names no route: unset it for every route (*), or list routes"
set -f # route patterns hold globs meant for Vault, not for the shell
for pattern in ${issuer_routes//,/ }; do
  # Vault's policy globs know only a trailing "*" (a raw prefix) and "+" (a
  # whole path segment); route names are \w([\w.-]*\w)?. So a pattern is a
  # route name, or a prefix ending in a delimiter, then "*".
  [[ "$pattern" == "*" || "$pattern" =~ ^[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?$ \
    || "$pattern" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]*[-_.]\*$ ]] && continue
  if [[ "$pattern" =~ ^[A-Za-z0-9_.-]*[A-Za-z0-9]\*$ ]]; then
    prefix=${pattern%\*}
    die "PHANTOM_ISSUER_ROUTES: \"$pattern\" is a raw prefix: it would grant every route whose name starts with \"$prefix\", such as \"${prefix}xyz\", not only \"$prefix-...\"; write \"$prefix-*\" (routes named $prefix-...), or list the routes"
  fi
  die "PHANTOM_ISSUER_ROUTES: \"$pattern\" is not a route name, \"<prefix>-*\", \"<prefix>_*\", \"<prefix>.*\" or \"*\" (a \"*\" matches only at the end)"
done
set +f

"$vault" token lookup >/dev/null 2>&1 || die "cannot use VAULT_TOKEN against $VAULT_ADDR (is Vault up and unsealed?)"

# check_out_dir creates the output directory (mode 0700) and refuses it unless
# it is yours and no one else can write to it or to a directory above it
# (sticky ones such as /tmp aside): whoever can write there can swap the
# proxy's credentials, or read a secret_id through a file they created.
check_out_dir() {
  (umask 077 && mkdir -p "$out_dir") || die "cannot create PHANTOM_OUT_DIR=$out_dir"
  out_dir=$(cd "$out_dir" && pwd -P) || die "cannot enter PHANTOM_OUT_DIR=$out_dir"
  local me dir uid mode
  me=$(id -u)
  dir=$out_dir
  while :; do
    read -r uid mode < <(stat -L -c '%u %a' "$dir" 2>/dev/null || stat -L -f '%u %Lp' "$dir") || die "cannot stat $dir"
    if [[ "$dir" == "$out_dir" ]]; then
      [[ "$uid" == "$me" ]] || die "PHANTOM_OUT_DIR=$out_dir belongs to uid $uid, not to you (uid $me): its owner could swap the proxy's credentials"
      ((8#$mode & 8#022)) && die "PHANTOM_OUT_DIR=$out_dir is writable by group or others (mode $mode): choose a directory only you can write to (chmod go-w)"
    else
      [[ "$uid" == "$me" || "$uid" == 0 ]] || die "$dir, above PHANTOM_OUT_DIR, belongs to uid $uid: its owner could swap the proxy's credentials"
      ((8#$mode & 8#022)) && ! ((8#$mode & 8#1000)) && die "$dir, above PHANTOM_OUT_DIR, is writable by group or others (mode $mode) and not sticky"
    fi
    [[ "$dir" == / ]] && break
    dir=$(dirname "$dir")
  done
}

# write_private writes a credential file as a fresh file of ours (mktemp:
# O_EXCL, mode 0600, a name no one can predict) and renames it into place,
# so no file someone else created or opened beforehand ever holds it.
tmp_files=()
trap 'rm -f "${tmp_files[@]}"' EXIT
write_private() {
  local tmp
  tmp=$(mktemp "$out_dir/.$1.XXXXXXXX") || die "cannot create a temporary file in $out_dir"
  tmp_files+=("$tmp")
  chmod 0600 "$tmp"
  printf '%s\n' "$2" >"$tmp"
  mv -f "$tmp" "$out_dir/$1" || die "cannot write $out_dir/$1"
}

# owned_by_mount refuses a policy of this name that another mount wrote.
owned_by_mount() { # policy-name marker-path
  local existing
  existing=$("$vault" policy read "$1" 2>/dev/null) || return 0
  grep -qF "path \"$2\"" <<<"$existing" && return 0
  die "policy $1 exists and is not for $mount/ (another mount's bootstrap wrote it; an install from before per-mount names wrote phantom-* for every mount): set PHANTOM_NAME to another name, or delete $1 once nothing uses it"
}

if [[ "$action" == install ]]; then
  [[ -f "$plugin_bin" ]] || die "plugin binary $plugin_bin not found (run make build)"
  # Vault refuses a version other than the one the binary reports: ask it.
  [[ -n "$version" ]] || version=$("$plugin_bin" -version 2>/dev/null | awk '{print $2}') ||
    die "$plugin_bin -version failed (a binary for another platform?): set PHANTOM_PLUGIN_VERSION"
  [[ "$version" =~ ^v[0-9]+\.[0-9]+\.[0-9]+ ]] || die "PHANTOM_PLUGIN_VERSION=$version is not a semantic version like v1.2.3"
  owned_by_mount "$admin_policy" "$mount/config"
  owned_by_mount "$issuer_policy" "$mount/config"
  owned_by_mount "$proxy_policy" "$mount/resolve"
fi
check_out_dir

if [[ "$action" == install ]]; then
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
  if "$vault" secrets list | awk '{print $1}' | grep -qxF "$mount/"; then
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

  # 3. This mount's policies: every PHANTOM_MOUNT in the templates becomes the
  # mount path, the sys/leases paths included.
  policy() {
    grep -q '^path ".*phantom/' "$1" && die "$1 names the mount phantom/ instead of PHANTOM_MOUNT"
    sed "s#PHANTOM_MOUNT#$mount#g" "$1"
  }
  policy "$here/policies/phantom-admin.hcl" | "$vault" policy write "$admin_policy" - >/dev/null \
    || die "writing the policy $admin_policy failed"
  policy "$here/policies/phantom-proxy.hcl" | "$vault" policy write "$proxy_policy" - >/dev/null \
    || die "writing the policy $proxy_policy failed"
  # The issuer template's token block, once per route pattern.
  {
    set -f
    for pattern in ${issuer_routes//,/ }; do
      policy "$here/policies/phantom-issuer.hcl" | sed -n '/token\/ROUTE_PATTERN/,/^}/p' | sed "s#ROUTE_PATTERN#$pattern#"
    done
    set +f
    policy "$here/policies/phantom-issuer.hcl" | sed -n '/config"/,/^}/p'
  } | "$vault" policy write "$issuer_policy" - >/dev/null || die "writing the policy $issuer_policy failed"
  say "wrote policies $admin_policy, $issuer_policy (routes: $issuer_routes), $proxy_policy for $mount/"

  # 4. AppRole for the proxy: a long-running client, so token_num_uses=0.
  # No default policy: the proxy needs none of it, and Vault re-parses the
  # default policy (it is templated) on every request of a token that holds it.
  if ! "$vault" auth list | awk '{print $1}' | grep -qx "approle/"; then
    "$vault" auth enable approle >/dev/null || die "enabling AppRole failed"
    say "enabled the AppRole auth method"
  fi
  role_args=(token_policies="$proxy_policy" token_no_default_policy=true token_num_uses=0
    token_ttl="${PHANTOM_PROXY_TOKEN_TTL:-1h}" token_max_ttl="${PHANTOM_PROXY_TOKEN_MAX_TTL:-24h}"
    secret_id_ttl="${PHANTOM_SECRET_ID_TTL:-0}" secret_id_num_uses=0)
  if [[ -n "${PHANTOM_PROXY_CIDRS:-}" ]]; then
    role_args+=(secret_id_bound_cidrs="$PHANTOM_PROXY_CIDRS" token_bound_cidrs="$PHANTOM_PROXY_CIDRS")
  fi
  "$vault" write "auth/approle/role/$role" "${role_args[@]}" >/dev/null || die "writing the AppRole role $role failed"
  say "wrote the AppRole role $role"
fi

# 5. Credentials for one proxy replica, mode 0600, in a private directory.
role_path=auth/approle/role/$role
role_id=$("$vault" read -field=role_id "$role_path/role-id") || die "reading the role_id of $role failed (is $mount/ installed?)"

# The role's secret_ids (their accessors) before this run's.
earlier=()
if ! listing=$("$vault" list -format=json "$role_path/secret-id" 2>&1); then
  # The CLI exits 2 both for "none" and for a refusal; only a refusal says Error.
  grep -q '^Error' <<<"$listing" && die "listing the secret_ids of $role failed: $(head -1 <<<"$listing")"
  listing=
fi
while read -r accessor; do
  [[ -n "$accessor" ]] && earlier+=("$accessor")
done < <(grep -o '"[0-9a-f-]*"' <<<"$listing" | tr -d '"')
to_destroy=()
if [[ "$rotate" == true ]]; then
  named=()
  for accessor in "${earlier[@]}"; do
    meta=$("$vault" write -format=json -field=metadata "$role_path/secret-id-accessor/lookup" secret_id_accessor="$accessor") \
      || die "looking up the earlier secret_id $accessor failed: nothing was rotated"
    if [[ -n "$replica" ]]; then
      grep -qE "\"phantom_replica\": *\"${replica//./\\.}\"" <<<"$meta" && to_destroy+=("$accessor")
    elif grep -q '"phantom_replica"' <<<"$meta"; then
      named+=("$(grep -o '"phantom_replica": *"[^"]*"' <<<"$meta" | sed 's/.*"\([^"]*\)"$/\1/')")
    else
      to_destroy+=("$accessor")
    fi
  done
  if ((${#named[@]} > 0)); then
    die "$role has secret_ids of named replicas (${named[*]}): rotate each with PHANTOM_REPLICA=<name>, so that no replica is cut off"
  fi
fi

secret_args=()
[[ -n "$replica" ]] && secret_args+=(metadata="{\"phantom_replica\":\"$replica\"}")
[[ -n "${PHANTOM_SECRET_ID_TTL:-}" ]] && secret_args+=(ttl="$PHANTOM_SECRET_ID_TTL")
if [[ -n "${PHANTOM_SECRET_ID_WRAP_TTL:-}" ]]; then
  secret_id=$("$vault" write -wrap-ttl="$PHANTOM_SECRET_ID_WRAP_TTL" -f -field=wrapping_token "$role_path/secret-id" "${secret_args[@]}") \
    || die "creating a wrapped secret_id failed"
  kind="wrapped secret_id (run the proxy with -secret-id-wrapped)"
else
  secret_id=$("$vault" write -f -field=secret_id "$role_path/secret-id" "${secret_args[@]}") || die "creating a secret_id failed"
  kind="secret_id"
fi
write_private role_id "$role_id"
write_private secret_id "$secret_id"
say "wrote $out_dir/role_id and a fresh $kind${replica:+ for replica $replica} of $role to $out_dir/secret_id (mode 0600)"
if [[ "$mount" != phantom || "$name" != "$default_name" ]]; then
  say "run the proxy with -mount=$mount$([[ "$name" == "$default_name" ]] || echo " -approle-role=$role")"
fi

# Only now that the new secret_id is in place: a replica that logs in again
# meanwhile finds it.
if [[ "$rotate" == true ]]; then
  for accessor in "${to_destroy[@]}"; do
    "$vault" write "$role_path/secret-id-accessor/destroy" secret_id_accessor="$accessor" >/dev/null \
      || die "destroying an earlier secret_id ($accessor) failed"
  done
  say "destroyed ${#to_destroy[@]} earlier secret_id(s) of $role${replica:+ for replica $replica}"
elif ((${#earlier[@]} > 0)); then
  say "$role has ${#earlier[@]} earlier secret_id(s), still valid: PHANTOM_ROTATE_SECRET_ID=true destroys them${replica:+ (those of replica $replica)}"
fi
