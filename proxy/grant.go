package proxy

import "github.com/phantomvault/phantom/internal/resolve"

// Grant is the engine's answer when a token may make a request: where it
// goes, the credential and how it is injected (package inject), the limits.
type Grant resolve.Grant
