package engine

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/phantomvault/phantom/internal/resolve"
)

// ReportUsage sends reports to the engine's usage path in one call. It
// uses PATCH, as resolve does (no existence check), the resolve call's
// connections and, like resolve, asks for the active node: the engine keeps
// the totals that budgets are decided from there. A 403 is not answered
// with a login here: the next resolve does that, and the report is sent
// again with the next flush.
func (v *Vault) ReportUsage(ctx context.Context, reports []resolve.UsageReport) error {
	if !v.session.authed.Load() {
		return errNotAuthenticated
	}
	var answer *struct {
		Rejected int64 `json:"rejected"`
	}
	if err := v.calls.patch(ctx, v.session.client.Token(), "usage", resolve.UsageBatch{Reports: reports}, &answer); err != nil {
		return fmt.Errorf("reporting usage to Vault: %w", err)
	}
	if answer.Rejected > 0 {
		// The engine rejects a report that fails its check, alone, and
		// applies nothing of it: with every count clamped, a bug.
		v.log.Error("Vault rejected LLM usage reports as malformed; they are lost", "rejected", answer.Rejected, "reports", len(reports))
	}
	return nil
}

// IsMalformed reports whether Vault refused a call as malformed (400, and
// not for the X-Vault-Forward header): the engine applied none of it, and
// sending it again would be refused again.
func IsMalformed(err error) bool {
	var vErr *vaultError
	return errors.As(err, &vErr) && vErr.status == http.StatusBadRequest && !isForwardRefused(err)
}
