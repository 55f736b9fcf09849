# Security team: configure the engine, manage routes and tokens, revoke.
# Route credentials are write-only: no policy can read them back.
path "phantom/config" {
  capabilities = ["create", "read", "update", "delete"]
}
path "phantom/routes" {
  capabilities = ["list"]
}
path "phantom/routes/*" {
  capabilities = ["create", "read", "update", "delete", "list"]
}
path "phantom/tokens" {
  capabilities = ["list"]
}
path "phantom/tokens/*" {
  capabilities = ["read", "delete", "list"]
}
path "phantom/tidy" {
  capabilities = ["update"]
}
# Revoke one token or every token of a route, and renew, through leases.
path "sys/leases/revoke/phantom/token/*" {
  capabilities = ["update"]
}
path "sys/leases/renew" {
  capabilities = ["update"]
}
path "sys/leases/revoke-prefix/phantom/token/*" {
  capabilities = ["update", "sudo"]
}
path "sys/leases/lookup/phantom/token/*" {
  capabilities = ["list", "sudo"]
}
