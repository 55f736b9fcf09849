// Package vault pins the Vault server that tests, the demo and the benchmark
// run. It holds no code: go.mod declares github.com/hashicorp/vault as a tool
// so `go build -C scripts/vault github.com/hashicorp/vault` builds a binary
// from pinned, checksummed sources without adding Vault's hundreds of modules
// to the shipped module's go.mod.
package vault
