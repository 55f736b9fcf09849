# phantom-proxy: ask the engine about each request. Nothing else: it cannot
# read routes, mint tokens or list anything.
path "phantom/resolve" {
  capabilities = ["update"]
}
