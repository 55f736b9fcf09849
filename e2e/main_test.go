// Package e2e runs Phantom end to end: a real Vault, the plugin and proxy
// binaries built from this checkout, installed by bootstrap/bootstrap.sh.
package e2e

import (
	"testing"

	"github.com/phantomvault/phantom/e2e/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }
