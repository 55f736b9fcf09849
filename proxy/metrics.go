package proxy

import (
	"net/http"
	"strconv"
	"time"

	metrics "github.com/armon/go-metrics"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/phantomvault/phantom/proxy/engine"
)

// metricPrefix starts every name: go-metrics prepends it as the service
// name, and the histograms below are declared with it.
const metricPrefix = "phantom_proxy"

// Metric names (after phantom_proxy_), following Prometheus conventions: the
// unit last, counters ending in _total.
var (
	metricRequests    = []string{"requests", "total"}           // counter: route, decision, status
	metricResolve     = []string{"resolve", "seconds"}          // histogram: outcome
	metricUpstream    = []string{"upstream", "seconds"}         // histogram: route (time to response headers)
	metricVaultAuth   = []string{"vault", "authenticated"}      // gauge: 1 when logged in
	metricVaultLogins = []string{"vault", "logins", "total"}    // counter: result
	metricBatch       = []string{"vault", "batch", "size"}      // histogram of requests per resolve call
	metricNodeHealthy = []string{"vault", "node", "healthy"}    // gauge: node; 1 while it serves (several -vault-addr)
	metricFailovers   = []string{"vault", "failovers", "total"} // counter: node a call moved away from, unprocessed
	// LLM usage (limits.go, usage_settle.go, package metering).
	metricLLMTokens      = []string{"llm", "tokens", "total"}               // counter: route, kind (input, output)
	metricUsageEstimated = []string{"usage", "estimated", "total"}          // counter: route; responses charged at the cap, their usage unreadable
	metricReportFailures = []string{"usage", "report", "failures", "total"} // counter: usage calls to Vault that failed (kept for the next)
	metricUsageDropped   = []string{"usage", "dropped", "total"}            // counter: token usages dropped, too many waiting for Vault
	metricUnmeasured     = []string{"usage", "unmeasured", "total"}         // counter: route; 2xx answers without readable usage where no budget or cap applies (not charged)
	// counter: route, reason (cut, malformed, missing, unanswered); requests that spent
	// what the proxy meters and whose usage could not be read, however they were charged
	metricUsageUnreadable = []string{"usage", "unreadable", "total"}
)

// latencyBuckets span a cached resolve (tens of microseconds) to a slow
// upstream answer (a language model's headers can take a minute).
var latencyBuckets = []float64{
	0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
	0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
}

// batchBuckets cover one request up to 128, the most the engine client
// sends in one call.
var batchBuckets = prometheus.ExponentialBuckets(1, 2, 8) // 1, 2, 4, ... 128

// histograms declares every sampled metric: go-metrics' AddSample calls for
// these names become histogram observations, which Prometheus can sum
// across replicas (summaries' quantiles cannot be).
var histograms = []histogramDef{
	{metricResolve, "Time to decide a request: the resolve call to Vault, or the cache.", []string{"outcome"}, latencyBuckets},
	{metricUpstream, "Time from forwarding a request to the upstream's response headers.", []string{"route"}, latencyBuckets},
	{metricBatch, "Requests carried by each resolve call to Vault.", nil, batchBuckets},
}

// Metrics records through go-metrics into a Prometheus registry of its
// own, so several proxies in one process (tests) do not collide. One is
// built per process and handed to engine.New (ForEngine) and NewServer.
type Metrics struct {
	m        *metrics.Metrics
	registry *prometheus.Registry
}

// NewMetrics builds the proxy's metrics and the registry /metrics serves.
func NewMetrics() (*Metrics, error) {
	registry := prometheus.NewRegistry()
	// Go runtime and process figures (go_goroutines,
	// process_resident_memory_bytes, ...) for capacity and leak watching.
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	sink, err := newHistogramSink(registry, histograms)
	if err != nil {
		return nil, err
	}
	conf := metrics.DefaultConfig(metricPrefix)
	conf.EnableHostname = false
	conf.EnableRuntimeMetrics = false
	conf.EnableServiceLabel = false
	m, err := metrics.New(conf, sink)
	if err != nil {
		return nil, err
	}
	return &Metrics{m: m, registry: registry}, nil
}

func (p *Metrics) request(route, decision string, status int) {
	p.m.IncrCounterWithLabels(metricRequests, 1, []metrics.Label{
		{Name: "route", Value: route},
		{Name: "decision", Value: decision},
		{Name: "status", Value: strconv.Itoa(status)},
	})
}

func (p *Metrics) resolveDone(start time.Time, outcome string) {
	p.m.AddSampleWithLabels(metricResolve, float32(time.Since(start).Seconds()), []metrics.Label{{Name: "outcome", Value: outcome}})
}

func (p *Metrics) upstreamDone(route string, start time.Time) {
	p.m.AddSampleWithLabels(metricUpstream, float32(time.Since(start).Seconds()), []metrics.Label{{Name: "route", Value: route}})
}

// llmUsage counts one response's LLM tokens, and whether they were estimated.
func (p *Metrics) llmUsage(route string, input, output int64, estimated bool) {
	r := metrics.Label{Name: "route", Value: route}
	p.m.IncrCounterWithLabels(metricLLMTokens, float32(input), []metrics.Label{r, {Name: "kind", Value: "input"}})
	p.m.IncrCounterWithLabels(metricLLMTokens, float32(output), []metrics.Label{r, {Name: "kind", Value: "output"}})
	if estimated {
		p.m.IncrCounterWithLabels(metricUsageEstimated, 1, []metrics.Label{r})
	}
}

func (p *Metrics) usageUnmeasured(route string) {
	p.m.IncrCounterWithLabels(metricUnmeasured, 1, []metrics.Label{{Name: "route", Value: route}})
}

// usageUnreadable counts a metered request whose usage could not be read.
func (p *Metrics) usageUnreadable(route, reason string) {
	p.m.IncrCounterWithLabels(metricUsageUnreadable, 1, []metrics.Label{{Name: "route", Value: route}, {Name: "reason", Value: reason}})
}

// UsageReportFailed counts a usage report to Vault that failed (kept for
// the next): metering.ReporterMetrics.
func (p *Metrics) UsageReportFailed() { p.m.IncrCounter(metricReportFailures, 1) }

// UsageDropped counts a token's usage dropped: metering.ReporterMetrics.
func (p *Metrics) UsageDropped() { p.m.IncrCounter(metricUsageDropped, 1) }

func (p *Metrics) handler() http.Handler {
	return promhttp.HandlerFor(p.registry, promhttp.HandlerOpts{})
}

// ForEngine is m as the engine client records into it: its logins, nodes
// and batches show on the proxy's /metrics.
func (p *Metrics) ForEngine() engine.Metrics { return engineMetrics{p.m} }

type engineMetrics struct{ m *metrics.Metrics }

func (e engineMetrics) Login(result string) {
	e.m.IncrCounterWithLabels(metricVaultLogins, 1, []metrics.Label{{Name: "result", Value: result}})
}

func (e engineMetrics) Authenticated(ok bool) { e.m.SetGauge(metricVaultAuth, gaugeOf(ok)) }

func (e engineMetrics) NodeHealthy(node string, ok bool) {
	e.m.SetGaugeWithLabels(metricNodeHealthy, gaugeOf(ok), []metrics.Label{{Name: "node", Value: node}})
}

func (e engineMetrics) Failover(node string) {
	e.m.IncrCounterWithLabels(metricFailovers, 1, []metrics.Label{{Name: "node", Value: node}})
}

func (e engineMetrics) BatchSize(requests int) { e.m.AddSample(metricBatch, float32(requests)) }

func gaugeOf(ok bool) float32 {
	if ok {
		return 1
	}
	return 0
}
