# CI and agent launchers: mint phantom tokens, and nothing else.
# bootstrap.sh writes this as <name>-issuer (phantom-issuer for the mount
# phantom/), with the mount path in place of the placeholder and one token block
# per pattern in PHANTOM_ISSUER_ROUTES (default "*": every route); this file is
# the template for one of them. bootstrap.sh admits only exact route names and
# names ending in "-*", "_*" or ".*" (and "*" alone), so a pattern never
# grants more than the routes whose names start with it.
path "PHANTOM_MOUNT/token/ROUTE_PATTERN" {
  capabilities = ["read", "update"]
}
path "PHANTOM_MOUNT/config" {
  capabilities = ["read"]
}
