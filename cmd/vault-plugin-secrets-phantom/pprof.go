package main

import (
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/phantomvault/phantom/internal/profiling"
)

// pprofEnv names a loopback address on which the plugin serves Go's
// profiler. Vault passes it when the plugin is registered with
// -env PHANTOM_PPROF_ADDR=127.0.0.1:6061; unset, nothing listens.
const pprofEnv = "PHANTOM_PPROF_ADDR"

// servePprof listens on addr, which must be a loopback address: profiles
// show the plugin's memory, credentials included.
func servePprof(addr string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", pprofEnv, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return nil, fmt.Errorf("%s must be a loopback address such as 127.0.0.1:6061, not %q", pprofEnv, addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", pprofEnv, err)
	}
	mux := http.NewServeMux()
	profiling.Register(mux)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	return ln, nil
}
