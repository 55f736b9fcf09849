package engine

import (
	"context"
	"errors"
	"fmt"

	"github.com/phantomvault/phantom/internal/resolve"
)

// errTunnelRefusedFresh is a 403 from Vault on the tunnel call even with a
// fresh token: a proxy policy written before the tunnel path existed.
var errTunnelRefusedFresh = errors.New("Vault refuses the tunnel call with a freshly issued token: the proxy's policy lacks patch on <mount>/tunnel (re-run bootstrap/bootstrap.sh to update it)")

// CheckTunnel asks the engine's tunnel path about one CONNECT. It goes
// through the batcher, so CONNECT checks share -vault-concurrency's calls in
// flight and its queue with resolves: a flood of CONNECTs is bounded, and
// shed, like a flood of requests.
func (v *Vault) CheckTunnel(ctx context.Context, req resolve.TunnelRequest) (*resolve.TunnelAnswer, error) {
	if !v.session.authed.Load() {
		return nil, errNotAuthenticated
	}
	return v.batch.checkTunnel(ctx, req)
}

// checkTunnelOnce makes the call for one CONNECT; the batcher calls it
// (engineCalls). Like resolve, it uses PATCH (no existence check), the
// resolve call's connections and deadline, asks for the active node
// (revocation bites at once), and logs in again, once, when Vault refuses
// the proxy's token.
func (v *Vault) checkTunnelOnce(ctx context.Context, req resolve.TunnelRequest) (*resolve.TunnelAnswer, error) {
	return callEngine(ctx, v, errTunnelRefusedFresh, func(ctx context.Context, vaultToken string) (*resolve.TunnelAnswer, error) {
		return v.calls.tunnel(ctx, vaultToken, req)
	})
}

// tunnel makes one tunnel call.
func (c httpCalls) tunnel(ctx context.Context, vaultToken string, req resolve.TunnelRequest) (*resolve.TunnelAnswer, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	var a *resolve.TunnelAnswer
	if err := c.patch(ctx, vaultToken, "tunnel", req, &a); err != nil {
		return nil, fmt.Errorf("checking a tunnel through Vault: %w", err)
	}
	if err := a.Validate(); err != nil {
		return nil, fmt.Errorf("checking a tunnel through Vault: %w", err)
	}
	return a, nil
}
