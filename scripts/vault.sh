#!/usr/bin/env bash
# Prints the path of a Vault binary: $VAULT_BIN, else `vault` on PATH, else the
# pinned version (scripts/vault/go.mod) built once into .cache/bin/vault.
# With --find it never builds: it fails when there is no binary yet (the e2e
# harness asks this way, and skips or fails its tests).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

if [[ -n "${VAULT_BIN:-}" ]]; then
  if [[ ! -x "$VAULT_BIN" ]]; then
    echo "vault.sh: VAULT_BIN=$VAULT_BIN is not an executable file" >&2
    exit 1
  fi
  echo "$VAULT_BIN"
  exit 0
fi

if path=$(command -v vault 2>/dev/null); then
  echo "$path"
  exit 0
fi

cached="$root/.cache/bin/vault"
stamp="$cached.gosum"
if [[ "${1:-}" == --find ]]; then
  if [[ -x "$cached" ]]; then
    echo "$cached"
    exit 0
  fi
  echo "vault.sh: no Vault binary: run scripts/vault.sh (make test does) or set VAULT_BIN" >&2
  exit 1
fi
# Rebuild when the pinned sources change, not only when the binary is absent.
want=$(sha256sum "$root/scripts/vault/go.sum" | cut -d' ' -f1)
if [[ -x "$cached" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  echo "$cached"
  exit 0
fi

echo "vault.sh: building the pinned Vault into .cache/bin (5-8 minutes the first time)..." >&2
mkdir -p "$root/.cache/bin"
tmp="$cached.tmp.$$"
trap 'rm -f "$tmp"' EXIT
go build -C "$root/scripts/vault" -trimpath -o "$tmp" github.com/hashicorp/vault >&2
mv "$tmp" "$cached"
echo "$want" > "$stamp"
echo "vault.sh: built $("$cached" version)" >&2
echo "$cached"
