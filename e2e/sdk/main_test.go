// Package sdk checks that official SDKs work through Phantom unchanged but
// for their base URL and key. It is a module of its own so the SDKs never
// become dependencies of the shipped binaries.
package sdk

import (
	"testing"

	"github.com/phantomvault/phantom/e2e/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }
