// Package version is the one version of Phantom's binaries: the plugin
// reports it to Vault as its RunningVersion and phantom-proxy prints it with
// -version. Builds set it with the Makefile's LDFLAGS:
//
//	-X github.com/phantomvault/phantom/internal/version.Version=v1.2.3
//	-X github.com/phantomvault/phantom/internal/version.Commit=1a2b3c4
package version

import (
	"fmt"
	"runtime"
)

// Version is the semantic version the binaries report. The default is what a
// plain `go build` reports and what bootstrap.sh registers unless told
// otherwise; the Makefile reads its default release version from here, so
// this line is the one to change for a release.
var Version = "v0.2.0"

// Commit is the git commit the binaries were built from ("unknown" outside
// a Makefile build; "-dirty" marks uncommitted changes).
var Commit = "unknown"

// String is what a binary's -version prints: its name, the version, and the
// commit and Go version it was built with.
func String(name string) string {
	return fmt.Sprintf("%s %s (commit %s, %s)", name, Version, Commit, runtime.Version())
}
