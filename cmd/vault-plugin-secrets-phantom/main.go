// Command vault-plugin-secrets-phantom is the Phantom secrets engine, served
// to Vault as an external plugin.
package main

import (
	"fmt"
	"os"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/sdk/plugin"

	"github.com/phantomvault/phantom/internal/version"
	phantom "github.com/phantomvault/phantom/plugin"
)

func main() {
	apiClientMeta := &api.PluginAPIClientMeta{}
	flags := apiClientMeta.FlagSet()
	printVersion := flags.Bool("version", false, "print the version, commit and Go version, and exit")
	if err := flags.Parse(os.Args[1:]); err != nil {
		fatal(err)
	}
	if *printVersion {
		// What Vault is told (RunningVersion) and what the operator registers
		// with -version: the same string.
		fmt.Println(version.String("vault-plugin-secrets-phantom"))
		return
	}

	if addr := os.Getenv(pprofEnv); addr != "" {
		ln, err := servePprof(addr)
		if err != nil {
			fatal(err)
		}
		defer ln.Close() // the profiler's server returns when the plugin ends
	}

	if err := plugin.ServeMultiplex(&plugin.ServeOpts{
		BackendFactoryFunc: phantom.Factory,
		// TLSProviderFunc is only needed by Vault versions before 1.12.
		TLSProviderFunc: api.VaultPluginTLSProvider(apiClientMeta.GetTLSConfig()),
	}); err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	hclog.New(&hclog.LoggerOptions{}).Error("plugin shutting down", "error", err)
	os.Exit(1)
}
