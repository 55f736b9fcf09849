package engine

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/api"

	"github.com/phantomvault/phantom/internal/resolve"
)

var (
	errNotAuthenticated = errors.New("not authenticated to Vault")
	errRefusedFresh     = errors.New("Vault refuses the proxy's freshly issued token: check that its policy grants patch on the resolve path")
	errForwardRefused   = errors.New("Vault Enterprise refuses the X-Vault-Forward header, so resolve could be answered by a performance standby that has not yet seen a revocation: " +
		"set allow_forwarding_via_header = true in Vault's replication stanza, or point -vault-addr at the active node only and run with -vault-forward-active=false")
)

// Vault is the client that asks the engine through Vault: Resolve hands
// each request to the batcher (batch.go), which calls resolveMany once per
// batch, which makes the call (http_calls.go) with the session's token
// (session.go) and logs in again when Vault refuses that token.
type Vault struct {
	cfg     Config
	log     hclog.Logger
	session *vaultSession
	calls   httpCalls   // the engine's paths, cheaper than through the api client
	nodes   *vaultNodes // several addresses: failover and health (nodes.go); nil for one
	batch   *batcher

	forwardLogged atomic.Bool // errForwardRefused was logged
}

// New builds the Vault client: a short deadline per call and no
// retries, since an agent is waiting on every call. Every resolve answer
// carries a credential, so it refuses to reach Vault with TLS verification
// off (VAULT_SKIP_VERIFY) unless Vault is on loopback, ignores
// VAULT_AGENT_ADDR and VAULT_SRV_LOOKUP (either would send the calls
// somewhere other than -vault-addr), and logs any HTTP proxy on the way.
func New(cfg Config, m Metrics, log hclog.Logger, opts ...Option) (*Vault, error) {
	if m == nil {
		return nil, errors.New("engine.New needs metrics")
	}
	cfg = cfg.withDefaults()
	o := options{appRoleRole: DefaultAppRoleRole(cfg.Mount), forwardActive: true}
	for _, opt := range opts {
		opt(&o)
	}
	apiCfg := api.DefaultConfig()
	if apiCfg.Error != nil {
		return nil, apiCfg.Error
	}
	addrs := VaultAddrs(cfg.Addr)
	if len(addrs) == 0 {
		return nil, errors.New("the Vault address is required")
	}
	apiCfg.Address = addrs[0]
	apiCfg.AgentAddress = ""
	apiCfg.SRVLookup = false
	apiCfg.MaxRetries = 0
	apiCfg.Timeout = cfg.Timeout
	transport, ok := apiCfg.HttpClient.Transport.(*http.Transport)
	if !ok {
		return nil, fmt.Errorf("unexpected Vault client transport %T", apiCfg.HttpClient.Transport)
	}
	transport.MaxIdleConnsPerHost = 256
	if cfg.CACert != "" || cfg.TLSServerName != "" {
		if err := apiCfg.ConfigureTLS(&api.TLSConfig{CACert: cfg.CACert, TLSServerName: cfg.TLSServerName}); err != nil {
			return nil, fmt.Errorf("configuring Vault TLS: %w", err)
		}
	}
	for _, addr := range addrs {
		if len(addrs) > 1 && strings.HasPrefix(addr, "unix://") {
			return nil, fmt.Errorf("the Vault address %q: several addresses must each be http:// or https://", addr)
		}
		vaultURL, err := url.Parse(addr)
		if err != nil || vaultURL.Host == "" && vaultURL.Scheme != "unix" {
			return nil, fmt.Errorf("the Vault address %q is not a URL", addr)
		}
		if err := checkVaultTransport(transport, vaultURL, log); err != nil {
			return nil, err
		}
	}
	client, err := api.NewClient(apiCfg)
	if err != nil {
		return nil, fmt.Errorf("creating Vault client: %w", err)
	}
	var nodes *vaultNodes
	if len(addrs) > 1 {
		if nodes, err = newVaultNodes(addrs, transport, cfg.Timeout, m, log); err != nil {
			return nil, err
		}
		// After NewClient, which insists on an *http.Transport: the client
		// and its clones share this http.Client, so every call to Vault
		// goes through the node list.
		apiCfg.HttpClient.Transport = nodes
	}
	client.ClearToken() // never a token from the environment: only our own login's
	v := &Vault{
		cfg:     cfg,
		log:     log,
		session: newVaultSession(cfg, client, o.appRoleRole, m, log),
		calls:   newHTTPCalls(client, apiCfg.HttpClient, cfg, o.forwardActive),
		nodes:   nodes,
	}
	v.batch = newBatcher(v, cfg.Concurrency, m)
	return v, nil
}

// checkVaultTransport refuses TLS without verification to a Vault off
// loopback, and logs (credentials redacted) the HTTP proxy, if any, that the
// calls to Vault go through.
func checkVaultTransport(t *http.Transport, vaultURL *url.URL, log hclog.Logger) error {
	local := vaultURL.Scheme == "unix" || loopbackHost(vaultURL.Hostname())
	if t.TLSClientConfig != nil && t.TLSClientConfig.InsecureSkipVerify && !local {
		return fmt.Errorf("TLS verification of Vault is off (VAULT_SKIP_VERIFY) and %s is not on loopback: "+
			"every resolve answer carries a credential, so give the proxy Vault's CA (-vault-ca-cert) instead", vaultURL.Host)
	}
	if vaultURL.Scheme == "http" && !local {
		log.Warn("Vault is reached over plain HTTP off loopback: credentials cross the network unencrypted", "vault", vaultURL.Redacted())
	}
	if t.Proxy == nil {
		return nil
	}
	proxyURL, err := t.Proxy(&http.Request{Method: http.MethodPost, URL: vaultURL, Header: http.Header{}})
	if err != nil {
		return fmt.Errorf("finding the HTTP proxy for Vault: %w", err)
	}
	if proxyURL != nil {
		log.Warn("reaching Vault through an HTTP proxy (from VAULT_HTTP_PROXY, VAULT_PROXY_ADDR or HTTPS_PROXY/HTTP_PROXY/NO_PROXY)",
			"proxy", proxyURL.Redacted(), "vault", vaultURL.Redacted())
	}
	return nil
}

// loopbackHost reports whether host (a name or an address) is loopback.
func loopbackHost(host string) bool {
	ip := net.ParseIP(host)
	return host == "localhost" || ip != nil && ip.IsLoopback()
}

// Run logs in and keeps the login alive until ctx ends (session.go),
// then waits for the batches still on their way to Vault.
func (v *Vault) Run(ctx context.Context) {
	if v.nodes != nil {
		watching := make(chan struct{})
		go func() { defer close(watching); v.nodes.watch(ctx) }()
		defer func() { <-watching }()
	}
	v.session.run(ctx)
	v.batch.wait()
}

// Ready reports whether the proxy holds a Vault token and can reach Vault
// (with several addresses: any node serves).
func (v *Vault) Ready(ctx context.Context) bool {
	if v.nodes == nil || !v.session.authed.Load() {
		return v.session.ready(ctx)
	}
	if v.session.reachable.Load() {
		return true
	}
	ok := v.nodes.probeAll(ctx)
	v.session.reachable.Store(ok)
	return ok
}

func isForbidden(err error) bool {
	var vErr *vaultError
	return errors.As(err, &vErr) && vErr.status == http.StatusForbidden
}

// Resolve asks the engine about one request, batched with whatever else
// waits for Vault (see batcher).
func (v *Vault) Resolve(ctx context.Context, req resolve.Request) (*Decision, error) {
	if !v.session.authed.Load() {
		return nil, errNotAuthenticated
	}
	return v.batch.resolve(ctx, req)
}

// resolveMany makes one call for reqs; the batcher calls it (engineCalls)
// once per batch.
func (v *Vault) resolveMany(ctx context.Context, reqs []resolve.Request) ([]*Decision, error) {
	return callEngine(ctx, v, errRefusedFresh, func(ctx context.Context, vaultToken string) ([]*Decision, error) {
		return v.calls.resolve(ctx, vaultToken, reqs)
	})
}

// callEngine makes one of the engine's calls with the proxy's token (once
// sends it), the same way for every call: it notes whether Vault could be
// reached, drops X-Vault-Forward where Vault refuses it (forwardingRefused),
// and, if Vault refuses the proxy's own token, logs in again, once,
// de-duplicated across calls. A refusal of the fresh token too is
// refusedFresh: the proxy's policy lacks the call's path.
func callEngine[T any](ctx context.Context, v *Vault, refusedFresh error, once func(ctx context.Context, vaultToken string) (T, error)) (T, error) {
	var none T
	if !v.session.authed.Load() {
		return none, errNotAuthenticated
	}
	call := func() (T, error) {
		out, err := once(ctx, v.session.client.Token())
		var vErr *vaultError
		v.session.reachable.Store(err == nil || errors.As(err, &vErr) && vErr.status != http.StatusServiceUnavailable)
		return out, err
	}
	gen := v.session.gen.Load()
	out, err := call()
	if isForwardRefused(err) {
		if err := v.forwardingRefused(ctx); err != nil {
			return none, err
		}
		out, err = call()
	}
	if !isForbidden(err) {
		return out, err
	}
	if err := v.session.reloginAfter(ctx, gen); err != nil {
		return none, err
	}
	out, err = call()
	if isForbidden(err) {
		v.log.Error(refusedFresh.Error(), "mount", v.calls.mountURL)
		return none, refusedFresh
	}
	return out, err
}

// forwardingRefused handles a Vault that refuses X-Vault-Forward. Vault
// Community Edition always does, and needs no header: its standbys forward
// every request to the active node. Vault Enterprise refuses it unless
// allow_forwarding_via_header is set, and there a performance standby could
// answer from storage that lags a revocation: fail closed and say why.
func (v *Vault) forwardingRefused(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, v.cfg.Timeout)
	defer cancel()
	h, err := v.session.client.Sys().HealthWithContext(ctx)
	if err != nil {
		return fmt.Errorf("Vault refuses X-Vault-Forward and its health is unknown: %w", err)
	}
	if h.Enterprise {
		if !v.forwardLogged.Swap(true) {
			v.log.Error(errForwardRefused.Error())
		}
		return errForwardRefused
	}
	if v.calls.forward.CompareAndSwap(true, false) {
		v.log.Info("Vault Community Edition refuses X-Vault-Forward; its standbys forward every request to the active node, so resolving without it", "version", h.Version)
	}
	return nil
}
