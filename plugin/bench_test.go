package plugin

import (
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
)

// BenchmarkResolve measures the engine's side of one proxied request,
// in process with in-memory storage (no Vault, no gRPC).
func BenchmarkResolve(b *testing.B) { benchmarkResolve(b, nil, nil) }

// BenchmarkResolveBoundCIDRs is BenchmarkResolve for a route and a token
// bound to client addresses, whose bound_cidrs are parsed once, when decoded.
func BenchmarkResolveBoundCIDRs(b *testing.B) {
	benchmarkResolve(b, map[string]any{"bound_cidrs": "10.0.0.0/8,192.0.2.0/24,2001:db8::/32"},
		map[string]any{"bound_cidrs": "10.1.0.0/16,192.0.2.7"})
}

// BenchmarkResolveLimits is BenchmarkResolve for a token under a rate limit
// (never reached), a route rate limit and an LLM token budget, beside
// BenchmarkResolve's token without limits.
func BenchmarkResolveLimits(b *testing.B) {
	benchmarkResolve(b, map[string]any{
		"usage_format": "openai", "rate_limit": "1000000000/1s", "route_rate_limit": "1000000000/1s",
		"token_budget": 1 << 40, "max_output_tokens": 4096,
	}, nil)
}

// benchmarkResolve resolves, again and again, one allowed request of a
// token minted with mint on a route written with route.
func benchmarkResolve(b *testing.B, route, mint map[string]any) {
	e := getTestBackend(b)
	e.writeRoute(b, "r", route)
	tok, _ := e.mint(b, "r", mint)
	data := map[string]any{"token": tok, "method": "GET", "path": "/v1/customers/cus_123", "client_ip": "10.1.2.3"}

	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		resp, err := e.b.HandleRequest(b.Context(), &logical.Request{
			Operation: logical.PatchOperation, Path: "resolve", Data: data, Storage: e.storage,
		})
		if err != nil || resp.Data["allowed"] != true {
			b.Fatalf("resolve: %v %v", resp, err)
		}
	}
}

// BenchmarkResolveBatch16 is BenchmarkResolve for a batch of 16 requests, as
// a busy proxy sends them; divide by 16 for the cost of one decision.
func BenchmarkResolveBatch16(b *testing.B) {
	e := getTestBackend(b)
	e.writeRoute(b, "r", nil)
	requests := make([]any, 16)
	for i := range requests {
		tok, _ := e.mint(b, "r", nil)
		requests[i] = map[string]any{"token": tok, "method": "GET", "path": "/v1/customers/cus_123", "client_ip": "10.1.2.3"}
	}
	data := map[string]any{"requests": requests}

	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		resp, err := e.b.HandleRequest(b.Context(), &logical.Request{
			Operation: logical.PatchOperation, Path: "resolve", Data: data, Storage: e.storage,
		})
		if err != nil || len(resp.Data["results"].([]map[string]any)) != 16 {
			b.Fatalf("resolve: %v %v", resp, err)
		}
	}
}
