package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/phantomvault/phantom/internal/resolve"
)

// maxResolveAnswer bounds what the proxy reads of one resolve answer.
const maxResolveAnswer = 1 << 20

// resolveCall is the one Vault call on every request. It is made with plain
// net/http rather than the api client: no retry wrapper, no rate limiter, a
// typed body both ways instead of map[string]any, and the connection pool of
// the api client's own http.Client (its TLS settings, no redirects).
//
// It asks Vault to run it on the active node (X-Vault-Forward: active-node):
// a Vault Enterprise performance standby would otherwise answer from its own
// storage and cache, which learn of a revocation only once it has
// replicated, and the promise is that the very next request is refused.
//
// It uses PATCH: Vault asks a plugin whether the resource exists before every
// create or update (a second gRPC round trip to the plugin per request),
// never before a patch. The engine accepts both; the proxy's policy grants
// only patch.
type resolveCall struct {
	http    *http.Client
	url     string
	headers http.Header // the api client's, e.g. X-Vault-Namespace
	timeout time.Duration
	forward *atomic.Bool // send X-Vault-Forward (see VaultResolver.forwardingRefused)
}

func newResolveCall(client *api.Client, hc *http.Client, cfg Config, forwardActive bool) resolveCall {
	c := resolveCall{
		http:    hc,
		url:     strings.TrimSuffix(client.Address(), "/") + "/v1/" + strings.Trim(cfg.Mount, "/") + "/resolve",
		headers: client.Headers(),
		timeout: cfg.VaultTimeout,
		forward: new(atomic.Bool),
	}
	c.forward.Store(forwardActive)
	return c
}

// vaultError is an HTTP error from Vault.
type vaultError struct {
	status int
	errors []string
}

func (e *vaultError) Error() string {
	return fmt.Sprintf("Vault answered %d: %s", e.status, strings.Join(e.errors, "; "))
}

// isForwardRefused reports Vault's refusal of X-Vault-Forward (Vault
// Community Edition, or Enterprise without allow_forwarding_via_header).
func isForwardRefused(err error) bool {
	var vErr *vaultError
	return errors.As(err, &vErr) && vErr.status == http.StatusBadRequest &&
		strings.Contains(strings.Join(vErr.errors, " "), "forwarding via header "+api.HeaderForward)
}

// do resolves reqs in one call: alone in the engine's single form, or
// several in its batch form. The decisions come back in order.
func (c resolveCall) do(ctx context.Context, vaultToken string, reqs []ResolveRequest) ([]*Decision, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var body []byte
	var err error
	if len(reqs) == 1 {
		body, err = json.Marshal(reqs[0])
	} else {
		body, err = json.Marshal(resolve.BatchRequest{Requests: reqs})
	}
	if err != nil {
		return nil, err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPatch, c.url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	for k, v := range c.headers {
		hreq.Header[k] = v
	}
	hreq.Header.Set("Content-Type", "application/merge-patch+json")
	hreq.Header.Set("X-Vault-Token", vaultToken)
	if c.forward.Load() {
		hreq.Header.Set(api.HeaderForward, "active-node")
	}
	resp, err := c.http.Do(hreq)
	if err != nil {
		return nil, fmt.Errorf("resolving through Vault: %w", err)
	}
	defer func() {
		io.Copy(io.Discard, io.LimitReader(resp.Body, maxResolveAnswer)) // keep the connection reusable
		resp.Body.Close()
	}()
	var out struct {
		Data   *resolve.Reply `json:"data"`
		Errors []string       `json:"errors"`
	}
	decodeErr := json.NewDecoder(io.LimitReader(resp.Body, maxResolveAnswer)).Decode(&out)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("resolving through Vault: %w", &vaultError{status: resp.StatusCode, errors: out.Errors})
	}
	if decodeErr != nil {
		return nil, fmt.Errorf("resolving through Vault: malformed answer: %w", decodeErr)
	}
	if out.Data == nil {
		return nil, errors.New("resolving through Vault: empty answer")
	}
	answers, err := out.Data.Answers(len(reqs))
	if err != nil {
		return nil, fmt.Errorf("resolving through Vault: %w", err)
	}
	ds := make([]*Decision, len(answers))
	for i, a := range answers {
		if ds[i], err = parseDecision(a); err != nil {
			return nil, err
		}
	}
	return ds, nil
}

// parseDecision reads the engine's answer, refusing anything malformed.
func parseDecision(a *resolve.Answer) (*Decision, error) {
	g, err := a.Validate()
	if err != nil {
		return nil, err
	}
	d := &Decision{Allowed: *a.Allowed, Reason: a.Reason, Message: a.Message, Route: a.Route, Accessor: a.Accessor, RetryAfterMS: a.RetryAfterMS}
	if d.Allowed {
		d.Grant = (*Grant)(g)
	}
	return d, nil
}
