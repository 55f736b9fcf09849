package main

import (
	"time"
)

// memoryRun is phantom-proxy's resident memory over a long run at
// saturation: it should stay flat.
type memoryRun struct {
	Connections int       `json:"connections"`
	Duration    string    `json:"duration"`
	Interval    string    `json:"interval"`
	Requests    int64     `json:"requests"`
	Errors      int64     `json:"errors"`
	RPS         float64   `json:"requests_per_second"`
	RSSMiB      []float64 `json:"rss_mib"`
}

// runMemory drives target over n connections for d, reading the proxy's RSS
// every d/20 (at least every 10 s).
func runMemory(target, auth string, n int, d time.Duration, pid int) *memoryRun {
	interval := max(d/20, 10*time.Second)
	m := &memoryRun{Connections: n, Duration: d.String(), Interval: interval.String()}
	rss := newRSSSampler(pid, interval)
	m.Requests, m.Errors = hammer(target, auth, n, d, func(int, time.Duration) {})
	_, samples := rss.stop()
	for _, s := range samples {
		m.RSSMiB = append(m.RSSMiB, round(s))
	}
	m.RPS = round(float64(m.Requests) / d.Seconds())
	return m
}
