// Command phantom-proxy forwards agents' API calls, swapping each phantom
// token for the real credential that Vault's Phantom engine holds.
//
// Every flag can also be set with the environment variable shown in -h.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/phantomvault/phantom/internal/version"
	"github.com/phantomvault/phantom/proxy"
	"github.com/phantomvault/phantom/proxy/engine"
	"github.com/phantomvault/phantom/proxy/metering"
)

func main() {
	// The live heap is a few MiB and every request allocates: unless GOGC
	// says otherwise, let the heap grow to 5x before collecting, a few MiB
	// traded for less garbage collection on the hot path (BENCHMARKS.md).
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "phantom-proxy:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) > 0 && args[0] == "env" {
		return runEnv(args[1:], os.Stdout) // env.go
	}
	var cfg proxy.Config
	var extraHeaders, queryParams, logLevel, logFormat, appRoleRole string
	var forwardActive bool
	fs := flag.NewFlagSet("phantom-proxy", flag.ContinueOnError)
	e := envFlags{fs: fs}
	e.str(&cfg.ListenAddr, "listen", "PHANTOM_LISTEN", proxy.DefaultListenAddr, "address agents connect to")
	e.str(&cfg.AdminAddr, "admin-listen", "PHANTOM_ADMIN_LISTEN", proxy.DefaultAdminAddr, "address of /metrics, /healthz and /readyz")
	e.str(&cfg.TLSCert, "tls-cert", "PHANTOM_TLS_CERT", "", "PEM certificate to serve agents over TLS (with -tls-key)")
	e.str(&cfg.TLSKey, "tls-key", "PHANTOM_TLS_KEY", "", "PEM private key for -tls-cert")
	e.str(&cfg.VaultAddr, "vault-addr", "VAULT_ADDR", "", "Vault address, or several comma-separated (the nodes of one cluster: a call moves to another only when the node did not process it) (required)")
	e.str(&cfg.VaultCACert, "vault-ca-cert", "VAULT_CACERT", "", "PEM CA certificate to verify Vault")
	e.str(&cfg.VaultTLSServerName, "vault-tls-server-name", "VAULT_TLS_SERVER_NAME", "", "server name to verify in Vault's certificate")
	e.dur(&cfg.VaultTimeout, "vault-timeout", "PHANTOM_VAULT_TIMEOUT", proxy.DefaultVaultTimeout, "deadline of each call to Vault; past it the agent gets 503")
	e.int(&cfg.VaultConcurrency, "vault-concurrency", "PHANTOM_VAULT_CONCURRENCY", proxy.DefaultVaultConcurrency, "most resolve calls to Vault at once; requests beyond wait and go together in the next call")
	e.str(&cfg.Mount, "mount", "PHANTOM_MOUNT", proxy.DefaultMount, "path where the Phantom engine is mounted")
	e.str(&cfg.AppRoleMount, "approle-mount", "PHANTOM_APPROLE_MOUNT", proxy.DefaultAppRoleMount, "path where the AppRole auth method is mounted")
	e.str(&appRoleRole, "approle-role", "PHANTOM_APPROLE_ROLE", "", "AppRole role whose secret_id a wrapped secret_id must be (default <mount>-proxy, as bootstrap.sh names it)")
	e.boolean(&forwardActive, "vault-forward-active", "PHANTOM_VAULT_FORWARD_ACTIVE", true, "send resolve calls with X-Vault-Forward: active-node, so that no Vault Enterprise performance standby answers before it has seen a revocation; false only when -vault-addr reaches the active node alone")
	e.str(&cfg.RoleIDFile, "role-id-file", "PHANTOM_ROLE_ID_FILE", "", "file holding the AppRole role_id (required)")
	e.str(&cfg.SecretIDFile, "secret-id-file", "PHANTOM_SECRET_ID_FILE", "", "file holding the AppRole secret_id, or a wrapping token for it (required)")
	e.boolean(&cfg.SecretIDWrapped, "secret-id-wrapped", "PHANTOM_SECRET_ID_WRAPPED", false, "the secret_id file holds a response-wrapping token")
	e.boolean(&cfg.RemoveSecretIDFile, "remove-secret-id-file", "PHANTOM_REMOVE_SECRET_ID_FILE", false, "delete the secret_id file once read")
	e.dur(&cfg.UpstreamTimeout, "upstream-timeout", "PHANTOM_UPSTREAM_TIMEOUT", proxy.DefaultUpstreamTimeout, "longest wait for an upstream's response headers (then 504)")
	e.dur(&cfg.DialTimeout, "dial-timeout", "PHANTOM_DIAL_TIMEOUT", proxy.DefaultDialTimeout, "longest wait to connect to an upstream")
	e.int64(&cfg.MaxBodyBytes, "max-body-bytes", "PHANTOM_MAX_BODY_BYTES", proxy.DefaultMaxBodyBytes, "largest request body accepted (then 413)")
	e.int64(&cfg.MaxLimitedBodyBytes, "max-limited-body-bytes", "PHANTOM_MAX_LIMITED_BODY_BYTES", proxy.DefaultMaxLimitedBodyBytes, "largest request body read whole to check it against a token's model, output or budget limits (then 413)")
	e.int64(&cfg.LimitedBodyMemory, "limited-body-memory", "PHANTOM_LIMITED_BODY_MEMORY", proxy.DefaultLimitedBodyMemory, "most bytes of such bodies held at once across the proxy (then 503 with Retry-After: 1)")
	e.dur(&cfg.BodyStallTimeout, "body-stall-timeout", "PHANTOM_BODY_STALL_TIMEOUT", proxy.DefaultBodyStallTimeout, "longest wait for the next bytes of a request body (then the connection is closed)")
	e.int(&cfg.MaxConnections, "max-connections", "PHANTOM_MAX_CONNECTIONS", proxy.DefaultMaxConnections, "most open connections on the agents' listener; more wait to be accepted")
	e.int(&cfg.MaxConnectionsPerClient, "max-connections-per-client", "PHANTOM_MAX_CONNECTIONS_PER_CLIENT", proxy.DefaultMaxConnsPerClient, "most open connections of one client address (IPv4, or IPv6 /64) on the agents' listener; more are closed at once; negative turns it off (behind a load balancer)")
	e.float(&cfg.UnknownTokenRate, "unknown-token-rate", "PHANTOM_UNKNOWN_TOKEN_RATE", proxy.DefaultUnknownTokenRate, "unknown tokens (and CONNECTs no live token vouches for) per second one client address may send after its burst (then 429); negative turns the limit off")
	e.int(&cfg.UnknownTokenBurst, "unknown-token-burst", "PHANTOM_UNKNOWN_TOKEN_BURST", proxy.DefaultUnknownTokenBurst, "unknown tokens (and CONNECTs no live token vouches for) one client address may send at once before -unknown-token-rate applies")
	e.str(&extraHeaders, "token-headers", "PHANTOM_TOKEN_HEADERS", "", "comma-separated extra request headers that may carry a phantom token")
	e.str(&queryParams, "token-query-params", "PHANTOM_TOKEN_QUERY_PARAMS", strings.Join(proxy.DefaultQueryParams, ","), "comma-separated query parameters that may carry a phantom token")
	e.str(&cfg.AuditFile, "audit-file", "PHANTOM_AUDIT_FILE", "-", "audit log file (JSON lines); - is stdout")
	e.dur(&cfg.ShutdownTimeout, "shutdown-timeout", "PHANTOM_SHUTDOWN_TIMEOUT", proxy.DefaultShutdownTimeout, "how long SIGTERM waits for in-flight requests")
	e.dur(&cfg.UsageReportInterval, "usage-report-interval", "PHANTOM_USAGE_REPORT_INTERVAL", metering.DefaultReportInterval, "how often the LLM usage measured is reported to Vault (the settlements of requests under a budget are reported at once)")
	e.boolean(&cfg.Pprof, "pprof", "PHANTOM_PPROF", false, "serve Go's profiler at /debug/pprof/ on the admin listener")
	var upstreamResolve string
	e.str(&cfg.ForwardListenAddr, "forward-listen", "PHANTOM_FORWARD_LISTEN", "", "address of the forward-proxy listener (CONNECT, for HTTPS_PROXY); off when empty")
	e.str(&cfg.ForwardCACert, "forward-ca-cert", "PHANTOM_FORWARD_CA_CERT", "", "PEM CA certificate that signs the forward proxy's leaf certificates (with -forward-ca-key)")
	e.str(&cfg.ForwardCAKey, "forward-ca-key", "PHANTOM_FORWARD_CA_KEY", "", "PEM private key of -forward-ca-cert; it never leaves the proxy")
	e.boolean(&cfg.ForwardCAGenerate, "forward-ca-generate", "PHANTOM_FORWARD_CA_GENERATE", false, "generate the forward-proxy CA in memory at start (development: agents fetch it again from /ca.pem after each restart)")
	e.str(&cfg.UpstreamCAFile, "upstream-ca-file", "PHANTOM_UPSTREAM_CA_FILE", "", "PEM CA certificates to trust for upstreams, besides the system roots")
	e.str(&upstreamResolve, "upstream-resolve", "PHANTOM_UPSTREAM_RESOLVE", "", "comma-separated host:port=ip:port: connect to ip:port for that upstream, still verifying TLS for host (as curl --resolve)")
	e.str(&logLevel, "log-level", "PHANTOM_LOG_LEVEL", "info", "trace, debug, info, warn or error")
	e.str(&logFormat, "log-format", "PHANTOM_LOG_FORMAT", "text", "text or json")
	printVersion := fs.Bool("version", false, "print the version, commit and Go version, and exit")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: phantom-proxy [flags]\n\nForwards agents' API calls, swapping phantom tokens for the real credentials held by Vault.\nEvery flag can also be set through the environment variable in brackets.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return nil
		}
		return err
	}
	if *printVersion {
		fmt.Println(version.String("phantom-proxy"))
		return nil
	}
	if e.err != nil {
		return e.err
	}
	cfg.ExtraHeaders = splitList(extraHeaders)
	cfg.QueryParams = splitList(queryParams)
	cfg.UpstreamResolve = splitList(upstreamResolve)
	if logFormat != "text" && logFormat != "json" {
		return fmt.Errorf("-log-format must be text or json")
	}
	level := hclog.LevelFromString(logLevel)
	if level == hclog.NoLevel {
		return fmt.Errorf("-log-level %q is not a log level", logLevel)
	}
	log := hclog.New(&hclog.LoggerOptions{Name: "phantom-proxy", Level: level, JSONFormat: logFormat == "json"})
	if err := cfg.Validate(); err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	m, err := proxy.NewMetrics()
	if err != nil {
		return fmt.Errorf("setting up metrics: %w", err)
	}
	client, err := engine.New(cfg.Engine(), m.ForEngine(), log.Named("vault"),
		engine.WithAppRoleRole(appRoleRole), engine.WithForwardToActive(forwardActive))
	if err != nil {
		return err
	}
	usage := proxy.NewUsageReporter(client, cfg.UsageReportInterval, cfg.VaultTimeout, m, log.Named("usage"))
	srv, err := proxy.NewServer(cfg, client, m, log, proxy.WithUsageReporter(usage), proxy.WithTunnelChecker(client))
	if err != nil {
		return err
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return err
	}
	adminLn, err := net.Listen("tcp", cfg.AdminAddr)
	if err != nil {
		ln.Close()
		return err
	}
	var forwardLn net.Listener
	if cfg.ForwardListenAddr != "" {
		if forwardLn, err = net.Listen("tcp", cfg.ForwardListenAddr); err != nil {
			ln.Close()
			adminLn.Close()
			return err
		}
		log.Info("forward proxy", "listen", forwardLn.Addr().String())
	}
	// The engine client's login lives as long as the listeners: when Serve
	// returns, for a signal or a failed listener, it ends too, and run
	// waits for it (and the batches it was sending) before returning.
	clientCtx, stopClient := context.WithCancel(ctx)
	clientDone := make(chan struct{})
	go func() {
		defer close(clientDone)
		client.Run(clientCtx)
	}()
	log.Info("serving", "version", version.Version, "commit", version.Commit, "listen", ln.Addr().String(), "admin", adminLn.Addr().String(), "vault", cfg.VaultAddr)
	// Usage is reported until the listeners have drained, then once more,
	// while the engine client's login still holds.
	usageCtx, stopUsage := context.WithCancel(context.Background())
	usageDone := make(chan struct{})
	go func() {
		defer close(usageDone)
		usage.Run(usageCtx)
	}()
	err = srv.ServeWithForward(ctx, ln, adminLn, forwardLn)
	stopUsage()
	<-usageDone
	stopClient()
	<-clientDone
	return err
}

// envFlags defines flags whose defaults come from environment variables.
type envFlags struct {
	fs  *flag.FlagSet
	err error
}

func (e *envFlags) usage(env, text string) string { return text + " [" + env + "]" }

func (e *envFlags) str(p *string, name, env, def, text string) {
	if v, ok := os.LookupEnv(env); ok {
		def = v
	}
	e.fs.StringVar(p, name, def, e.usage(env, text))
}

func (e *envFlags) dur(p *time.Duration, name, env string, def time.Duration, text string) {
	e.fs.DurationVar(p, name, fromEnv(e, env, def, time.ParseDuration), e.usage(env, text))
}

func (e *envFlags) boolean(p *bool, name, env string, def bool, text string) {
	e.fs.BoolVar(p, name, fromEnv(e, env, def, strconv.ParseBool), e.usage(env, text))
}

func (e *envFlags) int64(p *int64, name, env string, def int64, text string) {
	parse := func(s string) (int64, error) { return strconv.ParseInt(s, 10, 64) }
	e.fs.Int64Var(p, name, fromEnv(e, env, def, parse), e.usage(env, text))
}

func (e *envFlags) float(p *float64, name, env string, def float64, text string) {
	parse := func(s string) (float64, error) { return strconv.ParseFloat(s, 64) }
	e.fs.Float64Var(p, name, fromEnv(e, env, def, parse), e.usage(env, text))
}

func (e *envFlags) int(p *int, name, env string, def int, text string) {
	e.fs.IntVar(p, name, fromEnv(e, env, def, strconv.Atoi), e.usage(env, text))
}

// fromEnv returns env's value parsed, or def when env is unset; a value that
// does not parse is remembered as e.err.
func fromEnv[T any](e *envFlags, env string, def T, parse func(string) (T, error)) T {
	v, ok := os.LookupEnv(env)
	if !ok {
		return def
	}
	parsed, err := parse(v)
	if err != nil {
		if e.err == nil {
			e.err = fmt.Errorf("%s=%q: %v", env, v, err)
		}
		return def
	}
	return parsed
}

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}
