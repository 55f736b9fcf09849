package proxy

import (
	"net/http"
	"strconv"
	"time"

	metrics "github.com/armon/go-metrics"
	promsink "github.com/armon/go-metrics/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metric names, all under the phantom_proxy_ prefix.
var (
	metricRequests    = []string{"requests"}               // counter: route, decision, status
	metricResolve     = []string{"resolve", "seconds"}     // summary of resolve latency
	metricUpstream    = []string{"upstream", "seconds"}    // summary of upstream latency (to headers)
	metricVaultAuth   = []string{"vault", "authenticated"} // gauge: 1 when logged in
	metricVaultLogins = []string{"vault", "logins"}        // counter: result
	metricBatch       = []string{"vault", "batch", "size"} // summary of requests per resolve call
)

// proxyMetrics records through go-metrics into a Prometheus registry of its
// own, so several proxies in one process (tests) do not collide.
type proxyMetrics struct {
	m        *metrics.Metrics
	registry *prometheus.Registry
}

func newProxyMetrics() (*proxyMetrics, error) {
	registry := prometheus.NewRegistry()
	// Go runtime and process figures (go_goroutines,
	// process_resident_memory_bytes, ...) for capacity and leak watching.
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	sink, err := promsink.NewPrometheusSinkFrom(promsink.PrometheusOpts{Registerer: registry, Name: "phantom_proxy"})
	if err != nil {
		return nil, err
	}
	conf := metrics.DefaultConfig("phantom_proxy")
	conf.EnableHostname = false
	conf.EnableRuntimeMetrics = false
	conf.EnableServiceLabel = false
	m, err := metrics.New(conf, sink)
	if err != nil {
		return nil, err
	}
	return &proxyMetrics{m: m, registry: registry}, nil
}

func (p *proxyMetrics) request(route, decision string, status int) {
	p.m.IncrCounterWithLabels(metricRequests, 1, []metrics.Label{
		{Name: "route", Value: route},
		{Name: "decision", Value: decision},
		{Name: "status", Value: strconv.Itoa(status)},
	})
}

func (p *proxyMetrics) resolveDone(start time.Time, outcome string) {
	p.m.AddSampleWithLabels(metricResolve, float32(time.Since(start).Seconds()), []metrics.Label{{Name: "outcome", Value: outcome}})
}

func (p *proxyMetrics) resolveBatch(size int) {
	p.m.AddSample(metricBatch, float32(size))
}

func (p *proxyMetrics) upstreamDone(route string, start time.Time) {
	p.m.AddSampleWithLabels(metricUpstream, float32(time.Since(start).Seconds()), []metrics.Label{{Name: "route", Value: route}})
}

func (p *proxyMetrics) vaultAuthenticated(ok bool) {
	v := float32(0)
	if ok {
		v = 1
	}
	p.m.SetGauge(metricVaultAuth, v)
}

func (p *proxyMetrics) vaultLogin(result string) {
	p.m.IncrCounterWithLabels(metricVaultLogins, 1, []metrics.Label{{Name: "result", Value: result}})
}

func (p *proxyMetrics) handler() http.Handler {
	return promhttp.HandlerFor(p.registry, promhttp.HandlerOpts{})
}
