package proxy

import (
	"strings"

	metrics "github.com/armon/go-metrics"
	promsink "github.com/armon/go-metrics/prometheus"
	"github.com/prometheus/client_golang/prometheus"
)

// histogramDef declares one sampled metric: its name after the prefix, its
// label names (every sample carries exactly these) and its buckets.
type histogramDef struct {
	name    []string
	help    string
	labels  []string
	buckets []float64
}

// histogramSink is a go-metrics sink that turns declared samples into
// client_golang histograms and hands counters and gauges (and any sample
// not declared) to go-metrics' own Prometheus sink, which it embeds.
type histogramSink struct {
	*promsink.PrometheusSink
	histograms map[string]*prometheus.HistogramVec
}

func newHistogramSink(registry *prometheus.Registry, defs []histogramDef) (*histogramSink, error) {
	sink, err := promsink.NewPrometheusSinkFrom(promsink.PrometheusOpts{Registerer: registry, Name: metricPrefix})
	if err != nil {
		return nil, err
	}
	s := &histogramSink{PrometheusSink: sink, histograms: make(map[string]*prometheus.HistogramVec, len(defs))}
	for _, d := range defs {
		name := metricPrefix + "_" + strings.Join(d.name, "_")
		h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: d.help, Buckets: d.buckets}, d.labels)
		if err := registry.Register(h); err != nil {
			return nil, err
		}
		s.histograms[name] = h
	}
	return s, nil
}

// AddSample overrides the embedded sink's summaries.
func (s *histogramSink) AddSample(key []string, val float32) {
	s.AddSampleWithLabels(key, val, nil)
}

// AddSampleWithLabels observes val in the histogram declared for key (keys
// arrive with the prefix go-metrics adds).
func (s *histogramSink) AddSampleWithLabels(key []string, val float32, labels []metrics.Label) {
	h, ok := s.histograms[strings.Join(key, "_")]
	if !ok {
		s.PrometheusSink.AddSampleWithLabels(key, val, labels)
		return
	}
	values := make(prometheus.Labels, len(labels))
	for _, l := range labels {
		values[l.Name] = l.Value
	}
	// Labels other than the declared ones are a bug in this file, caught by
	// its test; a sample is not worth failing a request over.
	if o, err := h.GetMetricWith(values); err == nil {
		o.Observe(float64(val))
	}
}
