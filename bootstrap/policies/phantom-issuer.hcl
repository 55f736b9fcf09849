# CI and agent launchers: mint phantom tokens, and nothing else.
# bootstrap.sh writes one path block per pattern in PHANTOM_ISSUER_ROUTES
# (default "*": every route); this file is the template for one of them.
path "phantom/token/ROUTE_PATTERN" {
  capabilities = ["read", "update"]
}
path "phantom/config" {
  capabilities = ["read"]
}
