package proxy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/approle"
)

var (
	errNotAuthenticated = errors.New("not authenticated to Vault")
	errRefusedFresh     = errors.New("Vault refuses the proxy's freshly issued token: check that its policy grants patch on the resolve path")
	errForwardRefused   = errors.New("Vault Enterprise refuses the X-Vault-Forward header, so resolve could be answered by a performance standby that has not yet seen a revocation: " +
		"set allow_forwarding_via_header = true in Vault's replication stanza, or point -vault-addr at the active node only and run with -vault-forward-active=false")
)

// VaultOption sets what NewVaultResolver needs beyond Config.
type VaultOption func(*vaultOptions)

type vaultOptions struct {
	appRoleRole   string
	forwardActive bool
}

// WithAppRoleRole names the AppRole role whose secret_id a wrapped secret_id
// file must hold (default: DefaultAppRoleRole of the mount).
func WithAppRoleRole(role string) VaultOption {
	return func(o *vaultOptions) {
		if role != "" {
			o.appRoleRole = role
		}
	}
}

// WithForwardToActive sets whether resolve asks Vault to run it on the
// active node (X-Vault-Forward: active-node). On by default; turn it off only
// when -vault-addr reaches the active node alone.
func WithForwardToActive(on bool) VaultOption {
	return func(o *vaultOptions) { o.forwardActive = on }
}

// DefaultAppRoleRole is the proxy role bootstrap/bootstrap.sh creates for a
// mount: the mount path, lower-cased, "/" as "-", then "-proxy"
// (phantom-proxy for phantom/).
func DefaultAppRoleRole(mount string) string {
	return strings.ToLower(strings.ReplaceAll(strings.Trim(mount, "/"), "/", "-")) + "-proxy"
}

// minReloginInterval spaces out logins forced by 403s, so a misconfigured
// policy (403 even for a fresh token) cannot turn every request into a login.
const minReloginInterval = time.Second

// VaultResolver resolves tokens through the Phantom engine, logged in with
// AppRole as Vault Agent would be: it renews its token, logs in again when
// renewal ends or Vault refuses the token, and backs off while Vault is away.
type VaultResolver struct {
	cfg     Config
	client  *api.Client
	log     hclog.Logger
	metrics *proxyMetrics
	resolve resolveCall // the per-request call, cheaper than the api client's
	batch   *batcher

	loginMu        sync.Mutex // one login at a time
	cachedSecretID string     // guarded by loginMu: for re-logins once the file is gone
	cachedFrom     string     // guarded by loginMu: the file content cachedSecretID came from

	appRoleRole   string      // whose secret_id a wrapping token must hold
	forwardLogged atomic.Bool // errForwardRefused was logged

	gen        atomic.Uint64 // increments on every successful login
	lastForced atomic.Int64  // unix nanoseconds of the last login forced by a 403
	authed     atomic.Bool   // holding a token Vault has not refused
	reachable  atomic.Bool   // the last call reached Vault
	logins     chan *api.Secret
}

// NewVaultResolver builds the Vault client: a short deadline per call and no
// retries, since an agent is waiting on every call. Every resolve answer
// carries a credential, so it refuses to reach Vault with TLS verification
// off (VAULT_SKIP_VERIFY) unless Vault is on loopback, ignores
// VAULT_AGENT_ADDR and VAULT_SRV_LOOKUP (either would send the calls
// somewhere other than -vault-addr), and logs any HTTP proxy on the way.
func NewVaultResolver(cfg Config, log hclog.Logger, opts ...VaultOption) (*VaultResolver, error) {
	cfg = cfg.withDefaults()
	o := vaultOptions{appRoleRole: DefaultAppRoleRole(cfg.Mount), forwardActive: true}
	for _, opt := range opts {
		opt(&o)
	}
	apiCfg := api.DefaultConfig()
	if apiCfg.Error != nil {
		return nil, apiCfg.Error
	}
	apiCfg.Address = cfg.VaultAddr
	apiCfg.AgentAddress = ""
	apiCfg.SRVLookup = false
	apiCfg.MaxRetries = 0
	apiCfg.Timeout = cfg.VaultTimeout
	transport, ok := apiCfg.HttpClient.Transport.(*http.Transport)
	if !ok {
		return nil, fmt.Errorf("unexpected Vault client transport %T", apiCfg.HttpClient.Transport)
	}
	transport.MaxIdleConnsPerHost = 256
	if cfg.VaultCACert != "" || cfg.VaultTLSServerName != "" {
		if err := apiCfg.ConfigureTLS(&api.TLSConfig{CACert: cfg.VaultCACert, TLSServerName: cfg.VaultTLSServerName}); err != nil {
			return nil, fmt.Errorf("configuring Vault TLS: %w", err)
		}
	}
	vaultURL, err := url.Parse(cfg.VaultAddr)
	if err != nil || vaultURL.Host == "" && vaultURL.Scheme != "unix" {
		return nil, fmt.Errorf("the Vault address %q is not a URL", cfg.VaultAddr)
	}
	if err := checkVaultTransport(transport, vaultURL, log); err != nil {
		return nil, err
	}
	client, err := api.NewClient(apiCfg)
	if err != nil {
		return nil, fmt.Errorf("creating Vault client: %w", err)
	}
	client.ClearToken() // never a token from the environment: only our own login's
	v := &VaultResolver{
		cfg:         cfg,
		client:      client,
		log:         log,
		resolve:     newResolveCall(client, apiCfg.HttpClient, cfg, o.forwardActive),
		logins:      make(chan *api.Secret, 1),
		appRoleRole: o.appRoleRole,
	}
	v.batch = &batcher{call: v.resolveMany, maxInFlight: cfg.VaultConcurrency}
	v.reachable.Store(true)
	return v, nil
}

// checkVaultTransport refuses TLS without verification to a Vault off
// loopback, and logs (credentials redacted) the HTTP proxy, if any, that the
// calls to Vault go through.
func checkVaultTransport(t *http.Transport, vaultURL *url.URL, log hclog.Logger) error {
	local := vaultURL.Scheme == "unix" || loopbackAddr(net.JoinHostPort(vaultURL.Hostname(), "0"))
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

func (v *VaultResolver) setMetrics(m *proxyMetrics) {
	v.metrics = m
	v.batch.onBatch = m.resolveBatch
}

// Run logs in and keeps the login alive until ctx ends.
func (v *VaultResolver) Run(ctx context.Context) {
	var secret *api.Secret
	for ctx.Err() == nil {
		if secret == nil {
			secret = v.loginUntilSuccess(ctx)
			continue
		}
		secret = v.watch(ctx, secret)
	}
}

// watch renews secret's token until it can be renewed no more, then returns
// nil so that Run logs in again; or until a request logged in anew, then it
// returns that login's secret.
func (v *VaultResolver) watch(ctx context.Context, secret *api.Secret) *api.Secret {
	w, err := v.client.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: secret})
	if err != nil {
		v.log.Error("cannot renew the Vault token; logging in again", "error", err)
		return nil
	}
	go w.Start()
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case s := <-v.logins:
			return s
		case r := <-w.RenewCh():
			v.log.Debug("renewed the Vault token", "accessor", r.Secret.Auth.Accessor, "ttl", r.Secret.Auth.LeaseDuration)
		case err := <-w.DoneCh():
			if err != nil {
				v.log.Warn("Vault token renewal failed; logging in again", "error", err)
			} else {
				v.log.Info("Vault token reached the end of its renewable life; logging in again")
			}
			return nil
		}
	}
}

// loginUntilSuccess logs in, backing off exponentially with jitter.
func (v *VaultResolver) loginUntilSuccess(ctx context.Context) *api.Secret {
	backoff := 250 * time.Millisecond
	for {
		secret, err := v.login(ctx)
		if err == nil {
			// A request may have logged in meanwhile; this login is newer.
			select {
			case <-v.logins:
			default:
			}
			return secret
		}
		v.countLogin("failure")
		if ctx.Err() != nil {
			return nil
		}
		wait := backoff/2 + rand.N(backoff)
		v.log.Error("Vault login failed; retrying", "error", err, "retry_in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

// login performs one AppRole login and makes its token the client's.
func (v *VaultResolver) login(ctx context.Context) (*api.Secret, error) {
	v.loginMu.Lock()
	defer v.loginMu.Unlock()
	return v.loginLocked(ctx)
}

func (v *VaultResolver) loginLocked(ctx context.Context) (*api.Secret, error) {
	ctx, cancel := context.WithTimeout(ctx, max(v.cfg.VaultTimeout, 5*time.Second))
	defer cancel()
	secret, err := v.appRoleLogin(ctx)
	if err != nil {
		return nil, err
	}
	v.client.SetToken(secret.Auth.ClientToken)
	v.gen.Add(1)
	v.authed.Store(true)
	v.reachable.Store(true)
	v.countLogin("success")
	v.log.Info("logged in to Vault", "accessor", secret.Auth.Accessor, "ttl", secret.Auth.LeaseDuration, "renewable", secret.Auth.Renewable)
	return secret, nil
}

func (v *VaultResolver) appRoleLogin(ctx context.Context) (*api.Secret, error) {
	roleID, err := os.ReadFile(v.cfg.RoleIDFile)
	if err != nil {
		return nil, fmt.Errorf("reading the role_id file: %w", err)
	}
	secretID, err := v.secretID(ctx)
	if err != nil {
		return nil, err
	}
	auth, err := approle.NewAppRoleAuth(strings.TrimSpace(string(roleID)),
		&approle.SecretID{FromString: secretID}, approle.WithMountPath(v.cfg.AppRoleMount))
	if err != nil {
		return nil, err
	}
	// A clone, so a failed login never disturbs the token in use.
	c, err := v.client.Clone()
	if err != nil {
		return nil, err
	}
	secret, err := c.Auth().Login(ctx, auth)
	if err != nil {
		return nil, fmt.Errorf("AppRole login: %w", err)
	}
	if secret == nil || secret.Auth == nil || secret.Auth.ClientToken == "" {
		return nil, errors.New("AppRole login returned no token")
	}
	return secret, nil
}

// secretID reads the secret_id file (unwrapping it when it holds a wrapping
// token), removes it if configured, and remembers the secret_id for later
// logins once the file is gone.
func (v *VaultResolver) secretID(ctx context.Context) (string, error) {
	raw, err := os.ReadFile(v.cfg.SecretIDFile)
	value := strings.TrimSpace(string(raw))
	switch {
	case (errors.Is(err, fs.ErrNotExist) || err == nil && value == "") && v.cachedSecretID != "":
		return v.cachedSecretID, nil
	case err != nil:
		return "", fmt.Errorf("reading the secret_id file: %w", err)
	case value == "":
		return "", errors.New("the secret_id file is empty")
	case value == v.cachedFrom:
		// Unchanged since the last login: a wrapping token in it is used up.
		return v.cachedSecretID, nil
	}
	fileContent := value
	if v.cfg.SecretIDWrapped {
		if value, err = v.unwrapSecretID(ctx, value); err != nil {
			return "", err
		}
	}
	if v.cfg.RemoveSecretIDFile {
		if err := os.Remove(v.cfg.SecretIDFile); err != nil {
			v.log.Warn("could not remove the secret_id file", "error", err)
		}
	}
	v.cachedSecretID, v.cachedFrom = value, fileContent
	return value, nil
}

// unwrapSecretID unwraps a wrapped secret_id, after checking, as Vault
// recommends, that the wrapping token was created where the proxy role's
// secret_ids are: a token wrapped anywhere else (sys/wrapping/wrap, another
// role) is a substitute, and the real one has been intercepted.
func (v *VaultResolver) unwrapSecretID(ctx context.Context, wrappingToken string) (string, error) {
	c, err := v.client.Clone()
	if err != nil {
		return "", err
	}
	c.ClearToken() // sys/wrapping/lookup needs no token: none is sent
	info, err := c.Logical().WriteWithContext(ctx, "sys/wrapping/lookup", map[string]any{"token": wrappingToken})
	if err != nil {
		return "", fmt.Errorf("looking up the secret_id's wrapping token (expired, or already unwrapped by someone else?): %w", err)
	}
	want := "auth/" + strings.Trim(v.cfg.AppRoleMount, "/") + "/role/" + v.appRoleRole + "/secret-id"
	var got string
	if info != nil {
		got, _ = info.Data["creation_path"].(string)
	}
	if got != want {
		return "", fmt.Errorf("refusing the wrapped secret_id: its wrapping token was created at %q, not %q (a substitute?)", got, want)
	}
	c.SetToken(wrappingToken)
	unwrapped, err := c.Logical().UnwrapWithContext(ctx, "")
	if err != nil {
		return "", fmt.Errorf("unwrapping the secret_id: %w", err)
	}
	var s string
	if unwrapped != nil {
		s, _ = unwrapped.Data["secret_id"].(string)
	}
	if s == "" {
		return "", errors.New("the wrapped response holds no secret_id")
	}
	return s, nil
}

func (v *VaultResolver) countLogin(result string) {
	if v.metrics != nil {
		v.metrics.vaultLogin(result)
		v.metrics.vaultAuthenticated(v.authed.Load())
	}
}

// Ready reports whether the proxy holds a Vault token and Vault answered the
// last call; while it did not, it asks Vault's health endpoint.
func (v *VaultResolver) Ready(ctx context.Context) bool {
	if !v.authed.Load() {
		return false
	}
	if v.reachable.Load() {
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, v.cfg.VaultTimeout)
	defer cancel()
	h, err := v.client.Sys().HealthWithContext(ctx)
	ok := err == nil && h.Initialized && !h.Sealed
	v.reachable.Store(ok)
	return ok
}

func (v *VaultResolver) resolveOnce(ctx context.Context, reqs []ResolveRequest) ([]*Decision, error) {
	ds, err := v.resolve.do(ctx, v.client.Token(), reqs)
	var vErr *vaultError
	v.reachable.Store(err == nil || errors.As(err, &vErr) && vErr.status != http.StatusServiceUnavailable)
	return ds, err
}

func isForbidden(err error) bool {
	var vErr *vaultError
	return errors.As(err, &vErr) && vErr.status == http.StatusForbidden
}

// Resolve asks the engine about one request, batched with whatever else
// waits for Vault (see batcher).
func (v *VaultResolver) Resolve(ctx context.Context, req ResolveRequest) (*Decision, error) {
	if !v.authed.Load() {
		return nil, errNotAuthenticated
	}
	return v.batch.resolve(ctx, req)
}

// resolveMany makes one call for reqs. If Vault refuses the proxy's own
// token it logs in again, once, de-duplicated across calls.
func (v *VaultResolver) resolveMany(ctx context.Context, reqs []ResolveRequest) ([]*Decision, error) {
	if !v.authed.Load() {
		return nil, errNotAuthenticated
	}
	gen := v.gen.Load()
	ds, err := v.resolveOnce(ctx, reqs)
	if isForwardRefused(err) {
		if err := v.forwardingRefused(ctx); err != nil {
			return nil, err
		}
		ds, err = v.resolveOnce(ctx, reqs)
	}
	if !isForbidden(err) {
		return ds, err
	}
	if err := v.reloginAfter(ctx, gen); err != nil {
		return nil, err
	}
	ds, err = v.resolveOnce(ctx, reqs)
	if isForbidden(err) {
		v.log.Error(errRefusedFresh.Error(), "url", v.resolve.url)
		return nil, errRefusedFresh
	}
	return ds, err
}

// forwardingRefused handles a Vault that refuses X-Vault-Forward. Vault
// Community Edition always does, and needs no header: its standbys forward
// every request to the active node. Vault Enterprise refuses it unless
// allow_forwarding_via_header is set, and there a performance standby could
// answer from storage that lags a revocation: fail closed and say why.
func (v *VaultResolver) forwardingRefused(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, v.cfg.VaultTimeout)
	defer cancel()
	h, err := v.client.Sys().HealthWithContext(ctx)
	if err != nil {
		return fmt.Errorf("Vault refuses X-Vault-Forward and its health is unknown: %w", err)
	}
	if h.Enterprise {
		if !v.forwardLogged.Swap(true) {
			v.log.Error(errForwardRefused.Error())
		}
		return errForwardRefused
	}
	if v.resolve.forward.CompareAndSwap(true, false) {
		v.log.Info("Vault Community Edition refuses X-Vault-Forward; its standbys forward every request to the active node, so resolving without it", "version", h.Version)
	}
	return nil
}

// reloginAfter logs in unless another request already did since gen.
func (v *VaultResolver) reloginAfter(ctx context.Context, gen uint64) error {
	v.loginMu.Lock()
	defer v.loginMu.Unlock()
	if v.gen.Load() != gen {
		return nil
	}
	if time.Since(time.Unix(0, v.lastForced.Load())) < minReloginInterval {
		return errRefusedFresh
	}
	v.lastForced.Store(time.Now().UnixNano())
	v.log.Warn("Vault refused the proxy's token; logging in again")
	secret, err := v.loginLocked(ctx)
	if err != nil {
		v.authed.Store(false)
		v.countLogin("failure")
		v.notifyRun(nil) // Run keeps trying, with backoff
		return err
	}
	v.notifyRun(secret)
	return nil
}

// notifyRun hands Run the latest login (nil: none) without blocking.
func (v *VaultResolver) notifyRun(s *api.Secret) {
	select {
	case <-v.logins:
	default:
	}
	v.logins <- s
}
