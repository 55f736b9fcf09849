# Security team: configure the engine, manage routes and tokens, revoke.
# Route credentials are write-only: no policy can read them back.
# bootstrap.sh writes this as <name>-admin (phantom-admin for the mount
# phantom/), with the mount path in place of the placeholder everywhere, the
# lease paths included, so that an admin of one mount cannot act on another.
path "PHANTOM_MOUNT/config" {
  capabilities = ["create", "read", "update", "delete"]
}
path "PHANTOM_MOUNT/routes" {
  capabilities = ["list"]
}
path "PHANTOM_MOUNT/routes/*" {
  capabilities = ["create", "read", "update", "delete", "list"]
}
path "PHANTOM_MOUNT/tokens" {
  capabilities = ["list"]
}
path "PHANTOM_MOUNT/tokens/*" {
  capabilities = ["read", "delete", "list"]
}
path "PHANTOM_MOUNT/tidy" {
  capabilities = ["update"]
}
# Revoke one token or every token of a route, and renew, through leases.
path "sys/leases/revoke/PHANTOM_MOUNT/token/*" {
  capabilities = ["update"]
}
path "sys/leases/renew" {
  capabilities = ["update"]
}
path "sys/leases/revoke-prefix/PHANTOM_MOUNT/token/*" {
  capabilities = ["update", "sudo"]
}
path "sys/leases/lookup/PHANTOM_MOUNT/token/*" {
  capabilities = ["list", "sudo"]
}
