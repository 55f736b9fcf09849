package main

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"
)

// floor is the median latency of single, sequential calls to Vault: what a
// resolve per request costs an agent before phantom-proxy does anything.
// Each step adds one layer: Vault's HTTP; its token lookup and ACL; its hop
// to the plugin; the engine's decision.
type floor struct {
	HealthMS  float64 `json:"vault_sys_health_p50_ms"`
	RefusedMS float64 `json:"vault_acl_refused_p50_ms"`             // the proxy's token, a read its policy refuses: no plugin
	NoopMS    float64 `json:"vault_resolve_malformed_token_p50_ms"` // Vault and its hop to the plugin; the engine stops at the checksum
	ResolveMS float64 `json:"vault_resolve_p50_ms"`
}

func vaultFloor(c config) floor {
	client := &http.Client{}
	defer client.CloseIdleConnections()
	base := strings.TrimSuffix(c.vaultAddr, "/") + "/v1/"
	health := func() (*http.Request, error) { return http.NewRequest(http.MethodGet, base+"sys/health", nil) }
	refused := func() (*http.Request, error) {
		req, err := http.NewRequest(http.MethodGet, base+"phantom/resolve", nil)
		if err == nil {
			req.Header.Set("X-Vault-Token", c.resolveToken)
		}
		return req, err
	}
	resolve := func(token string) func() (*http.Request, error) {
		body, err := json.Marshal(resolveItem{Token: token, Method: "GET", Path: c.path, ClientIP: "127.0.0.1"})
		return func() (*http.Request, error) { return newResolveRequest(c, body), err }
	}
	return floor{
		HealthMS:  p50(client, http.StatusOK, health),
		RefusedMS: p50(client, http.StatusForbidden, refused),
		NoopMS:    p50(client, http.StatusOK, resolve("phm_malformed")),
		ResolveMS: p50(client, http.StatusOK, resolve(c.token)),
	}
}

// p50 makes 1000 calls, one at a time, and returns their median in ms; 0
// if a call fails or answers other than want.
func p50(client *http.Client, want int, newReq func() (*http.Request, error)) float64 {
	lat := make([]time.Duration, 0, 1000)
	for range cap(lat) {
		req, err := newReq()
		if err != nil {
			return 0
		}
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			return 0
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			return 0
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	return ms(quantile(lat, 0.5))
}
