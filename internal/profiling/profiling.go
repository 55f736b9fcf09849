// Package profiling serves Go's pprof on a mux of the caller's, for
// phantom-proxy's admin listener and the plugin's loopback listener alike.
package profiling

import (
	"net/http"
	"net/http/pprof"
)

// Register adds the pprof handlers under /debug/pprof/ to mux.
func Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
}
