package engine

import (
	"strings"
	"time"
)

// Defaults for Config fields left zero.
const (
	DefaultMount        = "phantom"
	DefaultAppRoleMount = "approle"
	DefaultTimeout      = 2 * time.Second
	DefaultConcurrency  = 1
)

// Config is what the client needs to reach the engine; package proxy fills
// it from its own Config.
type Config struct {
	// Addr is Vault's address, or several comma-separated addresses of
	// one cluster's nodes (VaultAddrs).
	Addr          string
	CACert        string // PEM file; empty means the system roots
	TLSServerName string
	Timeout       time.Duration // deadline of one call to Vault
	Mount         string        // where the engine is mounted
	// Concurrency is the most calls in flight at once; requests that find
	// them all busy wait and go together in the next call.
	Concurrency int

	AppRoleMount       string
	RoleIDFile         string
	SecretIDFile       string
	SecretIDWrapped    bool // the file holds a response-wrapping token
	RemoveSecretIDFile bool // delete the file once read, as Vault Agent can
}

func (c Config) withDefaults() Config {
	if c.Mount == "" {
		c.Mount = DefaultMount
	}
	if c.AppRoleMount == "" {
		c.AppRoleMount = DefaultAppRoleMount
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Concurrency == 0 {
		c.Concurrency = DefaultConcurrency
	}
	return c
}

// Option sets what New needs beyond Config.
type Option func(*options)

type options struct {
	appRoleRole   string
	forwardActive bool
}

// WithAppRoleRole names the AppRole role whose secret_id a wrapped secret_id
// file must hold (default: DefaultAppRoleRole of the mount).
func WithAppRoleRole(role string) Option {
	return func(o *options) {
		if role != "" {
			o.appRoleRole = role
		}
	}
}

// WithForwardToActive sets whether the engine's calls ask Vault to run them
// on the active node (X-Vault-Forward: active-node). On by default; turn it
// off only when -vault-addr reaches the active node alone.
func WithForwardToActive(on bool) Option {
	return func(o *options) { o.forwardActive = on }
}

// DefaultAppRoleRole is the proxy role bootstrap/bootstrap.sh creates for a
// mount: the mount path, lower-cased, "/" as "-", then "-proxy"
// (phantom-proxy for phantom/).
func DefaultAppRoleRole(mount string) string {
	return strings.ToLower(strings.ReplaceAll(strings.Trim(mount, "/"), "/", "-")) + "-proxy"
}

// VaultAddrs splits a -vault-addr value into its comma-separated addresses.
func VaultAddrs(s string) []string {
	var out []string
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// Metrics is what the client records. Package proxy implements it over
// its own metrics, so that one /metrics shows the client's too.
type Metrics interface {
	Login(result string) // an AppRole login: "success" or "failure"
	Authenticated(ok bool)
	NodeHealthy(node string, ok bool) // with several addresses
	Failover(node string)             // a call moved away from node, unprocessed
	BatchSize(requests int)           // the requests of one resolve call
}
