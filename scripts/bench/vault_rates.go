package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/api"
)

// vaultRates measures straight against Vault with n workers: resolve as
// phantom-proxy calls it (PATCH, the proxy's policy), one request per call
// and in batches of 16, and mint.
func vaultRates(c config, n int, d time.Duration) (resolve, batched, mint float64) {
	cfg := api.DefaultConfig()
	cfg.Address = c.vaultAddr
	cfg.MaxRetries = 0
	if t, ok := cfg.HttpClient.Transport.(*http.Transport); ok {
		t.MaxIdleConnsPerHost = n
	}
	client, err := api.NewClient(cfg)
	if err != nil {
		log.Fatal(err)
	}
	client.SetToken(c.vaultToken)
	rate := func(name string, per int, op func() error) float64 {
		var count, failed atomic.Int64
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		var wg sync.WaitGroup
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					if err := op(); err != nil {
						if failed.Add(1) == 1 {
							log.Printf("vault %s: %v", name, err)
						}
						continue
					}
					count.Add(int64(per))
				}
			}()
		}
		wg.Wait()
		r := round(float64(count.Load()) / d.Seconds())
		log.Printf("vault %-15s %d workers: %8.0f /s  errors %d", name, n, r, failed.Load())
		return r
	}
	one := resolveItem{Token: c.token, Method: "GET", Path: c.path, ClientIP: "127.0.0.1"}
	resolve = rate("resolve", 1, func() error { return patchResolve(cfg.HttpClient, c, one, 1) })
	batched = rate("resolve, batched", 16, func() error { return patchResolve(cfg.HttpClient, c, one, 16) })
	mint = rate("mint", 1, func() error {
		s, err := client.Logical().Read("phantom/token/" + c.route)
		if err == nil && s.LeaseID != "" {
			// Leave no thousands of leases behind.
			go client.Sys().Revoke(s.LeaseID)
		}
		return err
	})
	return resolve, batched, mint
}

type resolveItem struct {
	Token    string `json:"token"`
	Method   string `json:"method"`
	Path     string `json:"path"`
	ClientIP string `json:"client_ip"`
}

// newResolveRequest is a resolve call as phantom-proxy makes it: PATCH, with
// the proxy's kind of token.
func newResolveRequest(c config, body []byte) *http.Request {
	req, err := http.NewRequest(http.MethodPatch, strings.TrimSuffix(c.vaultAddr, "/")+"/v1/phantom/resolve", bytes.NewReader(body))
	if err != nil {
		log.Fatal(err) // only for a malformed -vault-addr
	}
	req.Header.Set("X-Vault-Token", c.resolveToken)
	req.Header.Set("Content-Type", "application/merge-patch+json")
	return req
}

// patchResolve resolves item, alone or n times in the batch form, and
// checks that every decision allows it.
func patchResolve(hc *http.Client, c config, item resolveItem, n int) error {
	var body []byte
	if n == 1 {
		body, _ = json.Marshal(item)
	} else {
		body, _ = json.Marshal(map[string]any{"requests": slices.Repeat([]resolveItem{item}, n)})
	}
	resp, err := hc.Do(newResolveRequest(c, body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	type decision struct {
		Allowed bool   `json:"allowed"`
		Reason  string `json:"reason"`
	}
	var out struct {
		Data struct {
			decision
			Results []decision `json:"results"`
		} `json:"data"`
		Errors []string `json:"errors"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d %v %v", resp.StatusCode, out.Errors, err)
	}
	ds := out.Data.Results
	if n == 1 {
		ds = []decision{out.Data.decision}
	}
	if len(ds) != n {
		return fmt.Errorf("%d decisions for %d requests", len(ds), n)
	}
	for _, d := range ds {
		if !d.Allowed {
			return fmt.Errorf("denied: %s", d.Reason)
		}
	}
	return nil
}
