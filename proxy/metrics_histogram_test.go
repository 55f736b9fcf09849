package proxy

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// TestMetricsAreHistograms: latencies and batch sizes are exposed as
// histograms (buckets that Prometheus can sum across replicas), never as
// summaries, and counters carry _total; the engine client's metrics show
// under their names.
func TestMetricsAreHistograms(t *testing.T) {
	m, err := NewMetrics()
	if err != nil {
		t.Fatal(err)
	}
	m.request("r", "allowed", 200)
	m.resolveDone(time.Now().Add(-300*time.Microsecond), "ok")
	m.resolveDone(time.Now(), "error")
	m.upstreamDone("r", time.Now().Add(-3*time.Second))
	e := m.ForEngine() // what the engine client records, on the same /metrics
	e.BatchSize(5)
	e.Login("ok")
	e.Authenticated(true)
	e.Failover("http://a:8200")
	e.NodeHealthy("http://a:8200", false)
	e.NodeHealthy("http://b:8200", true)

	rec := httptest.NewRecorder()
	m.handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	got := string(body)
	for _, want := range []string{
		"# TYPE phantom_proxy_resolve_seconds histogram",
		`phantom_proxy_resolve_seconds_bucket{outcome="ok",le="0.00025"} 0`,
		`phantom_proxy_resolve_seconds_bucket{outcome="ok",le="0.0005"} 1`,
		`phantom_proxy_resolve_seconds_count{outcome="error"} 1`,
		"# TYPE phantom_proxy_upstream_seconds histogram",
		`phantom_proxy_upstream_seconds_bucket{route="r",le="2.5"} 0`,
		`phantom_proxy_upstream_seconds_bucket{route="r",le="5"} 1`,
		"# TYPE phantom_proxy_vault_batch_size histogram",
		`phantom_proxy_vault_batch_size_bucket{le="4"} 0`,
		`phantom_proxy_vault_batch_size_bucket{le="8"} 1`,
		"phantom_proxy_vault_batch_size_sum 5",
		"phantom_proxy_vault_batch_size_count 1",
		`phantom_proxy_requests_total{decision="allowed",route="r",status="200"} 1`,
		`phantom_proxy_vault_logins_total{result="ok"} 1`,
		"phantom_proxy_vault_authenticated 1",
		`phantom_proxy_vault_failovers_total{node="http://a:8200"} 1`,
		`phantom_proxy_vault_node_healthy{node="http://a:8200"} 0`,
		`phantom_proxy_vault_node_healthy{node="http://b:8200"} 1`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	for line := range strings.Lines(got) {
		if strings.Contains(line, "phantom_proxy_") && (strings.HasSuffix(line, " summary\n") || strings.Contains(line, "quantile=")) {
			t.Errorf("a summary: %s", line)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", got)
	}
}
