package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/phantomvault/phantom/internal/resolve"
)

// maxResolveAnswer bounds what the proxy reads of one answer.
const maxResolveAnswer = 1 << 20

// httpCalls are the engine's calls: resolve, the one Vault call on every
// request, and tunnel and usage, all through patch. They are made with plain
// net/http rather than the api client: no retry wrapper, no rate limiter, a
// typed body both ways instead of map[string]any, and the connection pool of
// the api client's own http.Client (its TLS settings, no redirects).
//
// They ask Vault to run them on the active node (X-Vault-Forward: active-node):
// a Vault Enterprise performance standby would otherwise answer from its own
// storage and cache, which learn of a revocation only once it has
// replicated, and the promise is that the very next request is refused.
//
// They use PATCH: Vault asks a plugin whether the resource exists before every
// create or update (a second gRPC round trip to the plugin per request),
// never before a patch. The engine accepts both; the proxy's policy grants
// only patch.
type httpCalls struct {
	http     *http.Client
	mountURL string      // the engine's mount, with a trailing slash
	headers  http.Header // the api client's, e.g. X-Vault-Namespace
	timeout  time.Duration
	forward  *atomic.Bool // send X-Vault-Forward (see Vault.forwardingRefused)
}

func newHTTPCalls(client *api.Client, hc *http.Client, cfg Config, forwardActive bool) httpCalls {
	c := httpCalls{
		http:     hc,
		mountURL: strings.TrimSuffix(client.Address(), "/") + "/v1/" + strings.Trim(cfg.Mount, "/") + "/",
		headers:  client.Headers(),
		timeout:  cfg.Timeout,
		forward:  new(atomic.Bool),
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

// StatusError is the error of a call Vault answered with status and
// messages, as IsMalformed reads it: for tests of what classifies them.
func StatusError(status int, messages ...string) error {
	return &vaultError{status: status, errors: messages}
}

// isForwardRefused reports Vault's refusal of X-Vault-Forward (Vault
// Community Edition, or Enterprise without allow_forwarding_via_header).
func isForwardRefused(err error) bool {
	var vErr *vaultError
	return errors.As(err, &vErr) && vErr.status == http.StatusBadRequest &&
		strings.Contains(strings.Join(vErr.errors, " "), "forwarding via header "+api.HeaderForward)
}

// resolve resolves reqs in one call: alone in the engine's single form, or
// several in its batch form. The decisions come back in order.
func (c httpCalls) resolve(ctx context.Context, vaultToken string, reqs []resolve.Request) ([]*Decision, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var in any = resolve.BatchRequest{Requests: reqs}
	if len(reqs) == 1 {
		in = reqs[0]
	}
	var reply *resolve.Reply
	if err := c.patch(ctx, vaultToken, "resolve", in, &reply); err != nil {
		return nil, fmt.Errorf("resolving through Vault: %w", err)
	}
	answers, err := reply.Answers(len(reqs))
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

// patch makes one call to the engine's path (resolve, tunnel or usage): a
// PATCH, which spares Vault's existence check, sent to the active node when
// c.forward says so. The answer's data is decoded into data, a pointer to
// a pointer; an answer without data is an error.
func (c httpCalls) patch(ctx context.Context, vaultToken, path string, in, data any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPatch, c.mountURL+path, bytes.NewReader(body))
	if err != nil {
		return err
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
		return err
	}
	defer func() {
		io.Copy(io.Discard, io.LimitReader(resp.Body, maxResolveAnswer)) // keep the connection reusable
		resp.Body.Close()
	}()
	out := struct {
		Data   any      `json:"data"`
		Errors []string `json:"errors"`
	}{Data: data}
	decodeErr := json.NewDecoder(io.LimitReader(resp.Body, maxResolveAnswer)).Decode(&out)
	if resp.StatusCode != http.StatusOK {
		return &vaultError{status: resp.StatusCode, errors: out.Errors}
	}
	if decodeErr != nil {
		return fmt.Errorf("malformed answer: %w", decodeErr)
	}
	if v := reflect.ValueOf(data).Elem(); v.IsNil() {
		return errors.New("empty answer")
	}
	return nil
}

// parseDecision reads the engine's answer, refusing anything malformed.
func parseDecision(a *resolve.Answer) (*Decision, error) {
	g, err := a.Validate()
	if err != nil {
		return nil, err
	}
	return &Decision{Answer: a, Grant: g}, nil
}
