package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/proxy/metering"
)

// NewUsageReporter is the reporter of the usage the proxy measures
// (metering.UsageReporter), to sink (the engine: VaultResolver.ReportUsage)
// every interval (metering.DefaultReportInterval if zero), each call
// bounded by timeout (DefaultVaultTimeout if zero), counted in m.
func NewUsageReporter(sink metering.UsageSink, interval, timeout time.Duration, m *Metrics, log hclog.Logger) *metering.UsageReporter {
	if timeout <= 0 {
		timeout = DefaultVaultTimeout
	}
	return metering.NewUsageReporter(sink, metering.ReporterConfig{
		Interval: interval, Timeout: timeout, Metrics: m, Log: log, Malformed: malformedReport,
	})
}

// malformedReport reports Vault's refusal of a usage batch as malformed (a
// 400 that is not its refusal of X-Vault-Forward): the engine applied none
// of it, and would refuse it again.
func malformedReport(err error) bool {
	var vErr *vaultError
	return errors.As(err, &vErr) && vErr.status == http.StatusBadRequest && !isForwardRefused(err)
}

// ReportUsage sends reports to the engine's usage path in one call. It
// uses PATCH, as resolve does (no existence check), the resolve call's
// connections and, like resolve, asks for the active node: the engine keeps
// the totals that budgets are decided from there. A 403 is not answered
// with a login here: the next resolve does that, and the report is sent
// again with the next flush.
func (v *VaultResolver) ReportUsage(ctx context.Context, reports []resolve.UsageReport) error {
	if !v.session.authed.Load() {
		return errNotAuthenticated
	}
	var answer *struct {
		Rejected int64 `json:"rejected"`
	}
	if err := v.resolve.patch(ctx, v.session.client.Token(), "usage", resolve.UsageBatch{Reports: reports}, &answer); err != nil {
		return fmt.Errorf("reporting usage to Vault: %w", err)
	}
	if answer.Rejected > 0 {
		// The engine rejects a report that fails its check, alone, and
		// applies nothing of it: with every count clamped, a bug.
		v.log.Error("Vault rejected LLM usage reports as malformed; they are lost", "rejected", answer.Rejected, "reports", len(reports))
	}
	return nil
}
