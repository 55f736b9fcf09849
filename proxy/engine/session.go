package engine

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/approle"
)

// vaultSession is the proxy's AppRole login to Vault, kept as Vault Agent
// keeps one: it renews its token, logs in again when renewal ends or Vault
// refuses the token (reloginAfter, called by callEngine on a 403), backs
// off while Vault is away, and unwraps a wrapped secret_id. Every call the
// client makes carries its token.
type vaultSession struct {
	cfg     Config
	client  *api.Client
	log     hclog.Logger
	metrics Metrics

	loginMu        sync.Mutex // one login at a time
	cachedSecretID string     // guarded by loginMu: for re-logins once the file is gone
	cachedFrom     string     // guarded by loginMu: the file content cachedSecretID came from
	appRoleRole    string     // whose secret_id a wrapping token must hold

	gen        atomic.Uint64 // increments on every successful login
	lastForced atomic.Int64  // unix nanoseconds of the last login forced by a 403
	authed     atomic.Bool   // holding a token Vault has not refused
	reachable  atomic.Bool   // the last call reached Vault
	logins     chan *api.Secret
}

func newVaultSession(cfg Config, client *api.Client, appRoleRole string, m Metrics, log hclog.Logger) *vaultSession {
	v := &vaultSession{
		cfg:         cfg,
		client:      client,
		log:         log,
		metrics:     m,
		appRoleRole: appRoleRole,
		logins:      make(chan *api.Secret, 1),
	}
	v.reachable.Store(true)
	return v
}

// minReloginInterval spaces out logins forced by 403s, so a misconfigured
// policy (403 even for a fresh token) cannot turn every request into a login.
const minReloginInterval = time.Second

// run logs in and keeps the login alive until ctx ends.
func (v *vaultSession) run(ctx context.Context) {
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
// nil so that run logs in again; or until a request logged in anew, then it
// returns that login's secret.
func (v *vaultSession) watch(ctx context.Context, secret *api.Secret) *api.Secret {
	w, err := v.client.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: secret})
	if err != nil {
		v.log.Error("cannot renew the Vault token; logging in again", "error", err)
		return nil
	}
	renewing := make(chan struct{})
	go func() { defer close(renewing); w.Start() }()
	defer func() { w.Stop(); <-renewing }() // Start returns once stopped
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
func (v *vaultSession) loginUntilSuccess(ctx context.Context) *api.Secret {
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
func (v *vaultSession) login(ctx context.Context) (*api.Secret, error) {
	v.loginMu.Lock()
	defer v.loginMu.Unlock()
	return v.loginLocked(ctx)
}

func (v *vaultSession) loginLocked(ctx context.Context) (*api.Secret, error) {
	ctx, cancel := context.WithTimeout(ctx, max(v.cfg.Timeout, 5*time.Second))
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

func (v *vaultSession) appRoleLogin(ctx context.Context) (*api.Secret, error) {
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
func (v *vaultSession) secretID(ctx context.Context) (string, error) {
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
func (v *vaultSession) unwrapSecretID(ctx context.Context, wrappingToken string) (string, error) {
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

func (v *vaultSession) countLogin(result string) {
	v.metrics.Login(result)
	v.metrics.Authenticated(v.authed.Load())
}

// ready reports whether the proxy holds a Vault token and Vault answered the
// last call; while it did not, it asks Vault's health endpoint.
func (v *vaultSession) ready(ctx context.Context) bool {
	if !v.authed.Load() {
		return false
	}
	if v.reachable.Load() {
		return true
	}
	ctx, cancel := context.WithTimeout(ctx, v.cfg.Timeout)
	defer cancel()
	h, err := v.client.Sys().HealthWithContext(ctx)
	ok := err == nil && h.Initialized && !h.Sealed
	v.reachable.Store(ok)
	return ok
}

// reloginAfter logs in unless another request already did since gen.
func (v *vaultSession) reloginAfter(ctx context.Context, gen uint64) error {
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
		v.notifyRun(nil) // run keeps trying, with backoff
		return err
	}
	v.notifyRun(secret)
	return nil
}

// notifyRun hands run the latest login (nil: none) without blocking.
func (v *vaultSession) notifyRun(s *api.Secret) {
	select {
	case <-v.logins:
	default:
	}
	v.logins <- s
}
