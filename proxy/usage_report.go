package proxy

import (
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/phantomvault/phantom/proxy/engine"
	"github.com/phantomvault/phantom/proxy/metering"
)

// NewUsageReporter is the reporter of the usage the proxy measures
// (metering.UsageReporter), to sink (the engine: engine.Vault.ReportUsage)
// every interval (metering.DefaultReportInterval if zero), each call
// bounded by timeout (DefaultVaultTimeout if zero), counted in m. A batch
// Vault refused as malformed (engine.IsMalformed) is dropped: the engine
// applied none of it, and would refuse it again.
func NewUsageReporter(sink engine.UsageSink, interval, timeout time.Duration, m *Metrics, log hclog.Logger) *metering.UsageReporter {
	if timeout <= 0 {
		timeout = DefaultVaultTimeout
	}
	return metering.NewUsageReporter(sink, metering.ReporterConfig{
		Interval: interval, Timeout: timeout, Metrics: m, Log: log, Malformed: engine.IsMalformed,
	})
}
