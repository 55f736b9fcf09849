package proxy

import (
	"errors"
	"net"
	"time"

	"github.com/phantomvault/phantom/proxy/engine"
)

// Defaults for Config fields left zero.
const (
	DefaultListenAddr        = "127.0.0.1:8080"
	DefaultAdminAddr         = "127.0.0.1:9090"
	DefaultMount             = engine.DefaultMount
	DefaultAppRoleMount      = engine.DefaultAppRoleMount
	DefaultVaultTimeout      = engine.DefaultTimeout
	DefaultVaultConcurrency  = engine.DefaultConcurrency
	DefaultUpstreamTimeout   = 120 * time.Second // until response headers; bodies may stream longer
	DefaultDialTimeout       = 10 * time.Second
	DefaultShutdownTimeout   = 30 * time.Second
	DefaultMaxHeaderBytes    = 64 << 10
	DefaultMaxBodyBytes      = 64 << 20
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultIdleTimeout       = 120 * time.Second
	DefaultBodyStallTimeout  = 30 * time.Second // longest wait for the next bytes of a request body
	DefaultMaxConnections    = 4096             // per listener
	DefaultMaxConnsPerClient = 256              // per client address (IPv4, or IPv6 /64)
	DefaultUnknownTokenRate  = 1.0              // unknown tokens per second per client, after the burst
	DefaultUnknownTokenBurst = 20
)

// A body checked against token limits is read whole: 32 MiB is Anthropic's
// Messages request limit and above Gemini's 20 MB of inline data; OpenAI
// takes up to 50 MB of images in a request, for which it is raised.
const (
	DefaultMaxLimitedBodyBytes = 32 << 20
	DefaultLimitedBodyMemory   = 256 << 20 // all such bodies held at once
)

// DefaultQueryParams are the query parameters searched for a phantom token,
// as Google-style APIs put keys there.
var DefaultQueryParams = []string{"key", "api_key"}

// Config is everything phantom-proxy needs. cmd/phantom-proxy fills it from
// flags and environment variables.
type Config struct {
	ListenAddr string // agents connect here
	AdminAddr  string // /metrics, /healthz, /readyz
	TLSCert    string // optional TLS for ListenAddr
	TLSKey     string

	VaultAddr          string
	VaultCACert        string // PEM file; empty means the system roots
	VaultTLSServerName string
	VaultTimeout       time.Duration // deadline of one call to Vault
	Mount              string        // where the engine is mounted
	// VaultConcurrency is the most resolve calls in flight at once; requests
	// that find them all busy wait and go together in the next call.
	VaultConcurrency int

	AppRoleMount       string
	RoleIDFile         string
	SecretIDFile       string
	SecretIDWrapped    bool // the file holds a response-wrapping token
	RemoveSecretIDFile bool // delete the file once read, as Vault Agent can

	UpstreamTimeout time.Duration
	DialTimeout     time.Duration
	MaxBodyBytes    int64
	// MaxLimitedBodyBytes bounds a request body that a token limit makes
	// the proxy read whole (then 413), and LimitedBodyMemory all of them
	// held at once (then 503, Retry-After 1).
	MaxLimitedBodyBytes int64
	LimitedBodyMemory   int64
	// BodyStallTimeout bounds each wait for more of a request body.
	BodyStallTimeout time.Duration
	// MaxConnections bounds the open connections of each listener.
	MaxConnections int
	// MaxConnectionsPerClient bounds the open connections of one client
	// address on the agents' listener; a negative value turns it off (for
	// a proxy behind a load balancer, whose address every connection has).
	MaxConnectionsPerClient int
	// UnknownTokenRate and UnknownTokenBurst bound how fast one client
	// address (an IPv4 address or an IPv6 /64) may have tokens refused as
	// unknown by the engine, and CONNECTs checked that no live token vouches
	// for (none, or an unknown or dead one); past it, its requests and
	// CONNECTs get 429. A negative rate turns the limit off.
	UnknownTokenRate  float64
	UnknownTokenBurst int

	ExtraHeaders []string // more request headers that may carry a phantom token
	QueryParams  []string // query parameters that may carry a phantom token

	AuditFile string // JSON lines; "-" or "" is stdout

	// Pprof serves Go's profiler at /debug/pprof/ on the admin listener.
	// Off by default: profiles show memory, so only for a loopback admin
	// listener on a machine you trust.
	Pprof bool

	ShutdownTimeout time.Duration

	// UsageReportInterval is how often the LLM usage measured is reported
	// to the engine (metering.DefaultReportInterval when zero).
	UsageReportInterval time.Duration

	// Forward-proxy mode (forward.go): CONNECT on ForwardListenAddr, TLS
	// terminated with leaves signed by the CA in ForwardCACert and
	// ForwardCAKey (PEM files), or by one generated in memory at start
	// (ForwardCAGenerate, for development).
	ForwardListenAddr string
	ForwardCACert     string
	ForwardCAKey      string
	ForwardCAGenerate bool
	// UpstreamCAFile adds PEM CAs to the system roots for upstreams.
	UpstreamCAFile string
	// UpstreamResolve pins upstream names to addresses ("host:port=ip:port"),
	// as curl's --resolve: the operator's, never the agent's, choice.
	UpstreamResolve []string
}

// withDefaults returns a copy with zero fields set to their defaults.
func (c Config) withDefaults() Config {
	set := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	if c.ListenAddr == "" {
		c.ListenAddr = DefaultListenAddr
	}
	if c.AdminAddr == "" {
		c.AdminAddr = DefaultAdminAddr
	}
	if c.Mount == "" {
		c.Mount = DefaultMount
	}
	if c.AppRoleMount == "" {
		c.AppRoleMount = DefaultAppRoleMount
	}
	set(&c.VaultTimeout, DefaultVaultTimeout)
	if c.VaultConcurrency == 0 {
		c.VaultConcurrency = DefaultVaultConcurrency
	}
	set(&c.UpstreamTimeout, DefaultUpstreamTimeout)
	set(&c.DialTimeout, DefaultDialTimeout)
	set(&c.ShutdownTimeout, DefaultShutdownTimeout)
	set(&c.BodyStallTimeout, DefaultBodyStallTimeout)
	if c.MaxConnections == 0 {
		c.MaxConnections = DefaultMaxConnections
	}
	if c.MaxConnectionsPerClient == 0 {
		c.MaxConnectionsPerClient = DefaultMaxConnsPerClient
	}
	if c.UnknownTokenRate == 0 {
		c.UnknownTokenRate = DefaultUnknownTokenRate
	}
	if c.UnknownTokenBurst == 0 {
		c.UnknownTokenBurst = DefaultUnknownTokenBurst
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if c.MaxLimitedBodyBytes == 0 {
		c.MaxLimitedBodyBytes = DefaultMaxLimitedBodyBytes
	}
	if c.LimitedBodyMemory == 0 {
		c.LimitedBodyMemory = max(DefaultLimitedBodyMemory, c.MaxLimitedBodyBytes)
	}
	if c.QueryParams == nil {
		c.QueryParams = DefaultQueryParams
	}
	return c
}

// Engine is the part of c the engine client needs (engine.New).
func (c Config) Engine() engine.Config {
	return engine.Config{
		Addr:               c.VaultAddr,
		CACert:             c.VaultCACert,
		TLSServerName:      c.VaultTLSServerName,
		Timeout:            c.VaultTimeout,
		Mount:              c.Mount,
		Concurrency:        c.VaultConcurrency,
		AppRoleMount:       c.AppRoleMount,
		RoleIDFile:         c.RoleIDFile,
		SecretIDFile:       c.SecretIDFile,
		SecretIDWrapped:    c.SecretIDWrapped,
		RemoveSecretIDFile: c.RemoveSecretIDFile,
	}
}

// Validate reports the first missing or inconsistent setting.
func (c Config) Validate() error {
	switch {
	case c.VaultAddr == "":
		return errors.New("the Vault address is required")
	case c.RoleIDFile == "" || c.SecretIDFile == "":
		return errors.New("AppRole needs both a role_id file and a secret_id file")
	case (c.TLSCert == "") != (c.TLSKey == ""):
		return errors.New("TLS needs both a certificate and a key")
	case c.MaxBodyBytes < 0:
		return errors.New("the maximum body size must not be negative")
	case c.MaxLimitedBodyBytes < 0 || c.LimitedBodyMemory < 0:
		return errors.New("the limited-body sizes must not be negative")
	case c.LimitedBodyMemory != 0 && c.MaxLimitedBodyBytes > c.LimitedBodyMemory:
		return errors.New("-max-limited-body-bytes must not exceed -limited-body-memory")
	case c.MaxConnections < 0:
		return errors.New("the maximum number of connections must not be negative")
	case c.UnknownTokenBurst < 0:
		return errors.New("the unknown-token burst must not be negative")
	case c.VaultConcurrency < 0:
		return errors.New("the Vault concurrency must not be negative")
	case c.UsageReportInterval < 0:
		return errors.New("the usage report interval must not be negative")
	case c.ForwardCAGenerate && (c.ForwardCACert != "" || c.ForwardCAKey != ""):
		return errors.New("the forward-proxy CA is either generated or given as files, not both")
	case !c.ForwardCAGenerate && (c.ForwardCACert == "") != (c.ForwardCAKey == ""):
		return errors.New("the forward-proxy CA needs both a certificate and a key")
	case c.ForwardListenAddr != "" && !c.ForwardCAGenerate && c.ForwardCACert == "":
		return errors.New("the forward-proxy listener needs a CA: -forward-ca-cert and -forward-ca-key, or -forward-ca-generate")
	case c.Pprof && !loopbackAddr(c.AdminAddr):
		return errors.New("pprof shows the proxy's memory, credentials included: it needs an admin listener on a loopback address")
	}
	for _, h := range c.ExtraHeaders {
		if h == "" {
			return errors.New("an empty extra token header")
		}
	}
	return nil
}

// loopbackAddr reports whether addr (host:port) listens on loopback only.
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
