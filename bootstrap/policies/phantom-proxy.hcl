# phantom-proxy: ask the engine about each request, report the LLM tokens
# requests used, and keep its own token alive. Nothing else: it cannot read
# routes, mint tokens or list anything.
# Its tokens carry no default policy (see bootstrap.sh). bootstrap.sh writes
# this as <name>-proxy (phantom-proxy for the mount phantom/), with
# the mount path in place of the placeholder: each mount's proxy role resolves
# on its own mount only.

# It resolves with PATCH, which spares each request Vault's existence check
# (a second round trip to the plugin), so patch is all it needs.
path "PHANTOM_MOUNT/resolve" {
  capabilities = ["patch"]
}

# Usage reports (LLM tokens measured by the proxy), sent with PATCH too.
path "PHANTOM_MOUNT/usage" {
  capabilities = ["patch"]
}

# Forward-proxy mode: at each CONNECT, may a tunnel to this origin be
# opened? Sent with PATCH too; it reads only, and returns no credential.
path "PHANTOM_MOUNT/tunnel" {
  capabilities = ["patch"]
}

path "auth/token/renew-self" {
  capabilities = ["update"]
}
