package proxy

import (
	"context"
	"errors"
	"fmt"
	stdlog "log"
	"net"
	"net/http"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/net/netutil"

	"github.com/phantomvault/phantom/internal/profiling"
	"github.com/phantomvault/phantom/proxy/engine"
	"github.com/phantomvault/phantom/proxy/forward"
	"github.com/phantomvault/phantom/proxy/metering"
	"github.com/phantomvault/phantom/proxy/scrub"
)

// Server is phantom-proxy: the agent-facing listener and the admin listener.
type Server struct {
	cfg      Config
	log      hclog.Logger
	resolver engine.Resolver
	finder   *tokenFinder
	audit    *auditLog
	metrics  *Metrics
	// upstream is the transport to every upstream; reverseProxyLog keeps
	// ReverseProxy's own messages free of upstream bytes (reverse_proxy.go).
	upstream        http.RoundTripper
	reverseProxyLog *stdlog.Logger
	// Caches whose lifetime is the server's: the scrubbers of recent
	// credentials and ReverseProxy's copy buffers.
	scrubbers *scrub.Cache
	buffers   *bufferPool
	// unknownTokens limits each client's tokens refused as unknown; nil
	// when turned off.
	unknownTokens *unknownTokenLimit
	// forwardCA signs the forward-proxy mode's leaf certificates
	// (package forward); nil when that mode is off.
	forwardCA *forward.CA
	// usage takes the LLM usage measured of responses to the engine
	// (usage_report.go); nil: metrics only.
	usage *metering.UsageReporter
	// limitedBodies bounds the request bodies read into memory to check
	// them against token limits (limits_body.go).
	limitedBodies *bodyMemory
	// tunnels decides each CONNECT before it is answered
	// (forward_tunnel.go); the forward listener does not start without it.
	tunnels engine.TunnelChecker
}

// ServerOption sets what NewServer needs beyond Config.
type ServerOption func(*Server)

// WithUsageReporter has the server report the LLM usage it measures
// through r, whose Run the caller runs.
func WithUsageReporter(r *metering.UsageReporter) ServerOption {
	return func(s *Server) { s.usage = r }
}

// WithTunnelChecker has the forward listener check each CONNECT through c.
// ServeWithForward refuses to start the forward listener without one.
func WithTunnelChecker(c engine.TunnelChecker) ServerOption {
	return func(s *Server) { s.tunnels = c }
}

// NewServer wires a proxy around resolver, recording into m, the metrics
// the engine client was given too (one /metrics for both). It opens the
// audit log; Close releases it.
func NewServer(cfg Config, resolver engine.Resolver, m *Metrics, log hclog.Logger, opts ...ServerOption) (*Server, error) {
	if m == nil {
		return nil, errors.New("NewServer needs metrics (NewMetrics)")
	}
	cfg = cfg.withDefaults()
	audit, err := openAuditLog(cfg.AuditFile)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:           cfg,
		log:           log,
		resolver:      resolver,
		finder:        newTokenFinder(cfg.ExtraHeaders, cfg.QueryParams),
		audit:         audit,
		metrics:       m,
		scrubbers:     scrub.NewCache(),
		buffers:       newBufferPool(),
		unknownTokens: newUnknownTokenLimit(cfg.UnknownTokenRate, cfg.UnknownTokenBurst),
		limitedBodies: newBodyMemory(cfg.MaxLimitedBodyBytes, cfg.LimitedBodyMemory, cfg.MaxConnectionsPerClient < 0),
	}
	for _, opt := range opts {
		opt(s)
	}
	transport := newUpstreamTransport(cfg)
	if err := configureUpstreamTLS(transport, cfg); err != nil { // upstream_tls.go
		audit.Close()
		return nil, err
	}
	s.upstream = transport
	s.reverseProxyLog = withheldDetailLog(log)
	if cfg.ForwardCAGenerate || cfg.ForwardCACert != "" {
		if s.forwardCA, err = forward.NewCA(cfg.ForwardCACert, cfg.ForwardCAKey, cfg.ForwardCAGenerate); err != nil {
			audit.Close()
			return nil, err
		}
	}
	return s, nil
}

// newUpstreamTransport is tuned for many keep-alive connections to a few
// upstreams. It ignores HTTP(S)_PROXY: credentials go straight upstream.
func newUpstreamTransport(cfg Config) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	// The proxy asks for gzip and decodes it itself (readableResponse): the
	// transport would decode only when the first Content-Encoding is gzip
	// and then drop every value, hiding a second encoding.
	t.DisableCompression = true
	t.DialContext = (&net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}).DialContext
	t.MaxIdleConns = 1024
	t.MaxIdleConnsPerHost = 256
	t.ResponseHeaderTimeout = cfg.UpstreamTimeout
	t.TLSHandshakeTimeout = cfg.DialTimeout
	return t
}

// AdminHandler serves /metrics, /healthz (the process is up), /readyz (it
// can reach a decision through Vault) and, when configured, /debug/pprof/.
func (s *Server) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.metrics.handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !s.resolver.Ready(r.Context()) {
			http.Error(w, "not ready: no authenticated connection to Vault", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	if s.forwardCA != nil {
		// The forward proxy's CA certificate, for agents to trust; never its key.
		mux.HandleFunc("GET /ca.pem", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/x-pem-file")
			w.Write(s.forwardCA.CertPEM())
		})
	}
	if s.cfg.Pprof {
		profiling.Register(mux)
	}
	return mux
}

// maxAdminConnections bounds the admin listener: scrapers and probes.
const maxAdminConnections = 64

// Serve runs the proxy on ln and the admin endpoints on adminLn until ctx
// ends or either server fails, then drains in-flight requests for up to
// ShutdownTimeout. It returns once both servers' goroutines have ended.
func (s *Server) Serve(ctx context.Context, ln, adminLn net.Listener) error {
	return s.ServeWithForward(ctx, ln, adminLn, nil)
}

// ServeWithForward is Serve with the forward-proxy listener forwardLn
// (forward.go) too, when it is not nil; it needs the forward-proxy CA.
func (s *Server) ServeWithForward(ctx context.Context, ln, adminLn, forwardLn net.Listener) error {
	if forwardLn != nil && s.forwardCA == nil {
		return errors.New("the forward-proxy listener needs a CA")
	}
	if forwardLn != nil && s.tunnels == nil {
		return errors.New("the forward-proxy listener needs a tunnel checker (WithTunnelChecker)")
	}
	proxySrv := s.httpServer(s)
	adminSrv := s.httpServer(s.AdminHandler())
	ln = netutil.LimitListener(limitPerClient(ln, s.cfg.MaxConnectionsPerClient), s.cfg.MaxConnections)
	adminLn = netutil.LimitListener(adminLn, maxAdminConnections)
	errc := make(chan error, 4)
	go func() {
		if s.cfg.TLSCert != "" {
			errc <- proxySrv.ServeTLS(ln, s.cfg.TLSCert, s.cfg.TLSKey)
		} else {
			errc <- proxySrv.Serve(ln)
		}
	}()
	go func() { errc <- adminSrv.Serve(adminLn) }()
	running := 2
	var fwd *forwardProxy
	if forwardLn != nil {
		fwd = s.newForwardProxy(forwardLn)
		fwd.serve(forwardLn, errc)
		running += 2
	}
	sweepCtx, stopSweeping := context.WithCancel(context.Background())
	swept := make(chan struct{})
	go func() { defer close(swept); s.sweepCaches(sweepCtx) }()
	defer func() { stopSweeping(); <-swept }()

	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		running--
	}
	drain, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	s.log.Info("draining", "timeout", s.cfg.ShutdownTimeout)
	if e := proxySrv.Shutdown(drain); e != nil && err == nil {
		err = fmt.Errorf("draining: %w", e)
	}
	if fwd != nil {
		if e := fwd.shutdown(drain); e != nil && err == nil {
			err = fmt.Errorf("draining the forward proxy: %w", e)
		}
	}
	if e := adminSrv.Shutdown(drain); e != nil {
		// Scrapes and probes only: worth a line, not a failed exit.
		s.log.Warn("draining the admin listener", "error", e)
	}
	// Shutdown has closed both listeners, so both Serve calls return now.
	for ; running > 0; running-- {
		if e := <-errc; !errors.Is(e, http.ErrServerClosed) {
			s.log.Warn("a listener failed while draining", "error", e)
		}
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// cacheSweepInterval is how often expired cache entries (scrubbers of
// rotated keys, limiter state) leave memory.
const cacheSweepInterval = time.Minute

// sweepCaches removes expired cache entries until ctx ends.
func (s *Server) sweepCaches(ctx context.Context) {
	t := time.NewTicker(cacheSweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.scrubbers.Sweep()
			s.unknownTokens.sweep()
		}
	}
}

func (s *Server) httpServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler: h,
		// "OPTIONS *" must reach the handler, which refuses it, rather
		// than get net/http's built-in 200.
		DisableGeneralOptionsHandler: true,
		ReadHeaderTimeout:            DefaultReadHeaderTimeout,
		IdleTimeout:                  DefaultIdleTimeout,
		MaxHeaderBytes:               DefaultMaxHeaderBytes,
		ErrorLog:                     s.log.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
}

// Close releases the audit log and forgets the cached scrubbers.
func (s *Server) Close() error {
	s.scrubbers.Purge()
	return s.audit.Close()
}
