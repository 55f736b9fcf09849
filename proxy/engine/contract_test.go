package engine

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/phantomvault/phantom/internal/origin"
	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/internal/token"
	"github.com/phantomvault/phantom/plugin"
)

// engineOverHTTP serves the engine's resolve path as Vault does: the JSON
// body becomes the request's data, the response's data goes back as JSON
// (an external plugin's data crosses gRPC as JSON too).
func engineOverHTTP(t *testing.T, b logical.Backend, s logical.Storage) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var data map[string]any
		dec := json.NewDecoder(r.Body)
		dec.UseNumber()
		if err := dec.Decode(&data); err != nil {
			http.Error(w, `{"errors":["bad JSON"]}`, http.StatusBadRequest)
			return
		}
		resp, err := b.HandleRequest(r.Context(), &logical.Request{Operation: logical.PatchOperation, Path: "resolve", Data: data, Storage: s})
		switch {
		case err != nil:
			w.WriteHeader(http.StatusInternalServerError)
			json.NewEncoder(w).Encode(map[string]any{"errors": []string{err.Error()}})
		case resp.IsError():
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(map[string]any{"errors": []string{resp.Error().Error()}})
		default:
			json.NewEncoder(w).Encode(map[string]any{"data": resp.Data})
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// realEngine is the engine's code over in-memory storage, and call runs one
// of its operations as an admin would, failing the test on an error.
func realEngine(t *testing.T) (engine logical.Backend, storage logical.Storage, call func(op logical.Operation, path string, data map[string]any) map[string]any) {
	t.Helper()
	storage = &logical.InmemStorage{}
	conf := logical.TestBackendConfig()
	conf.StorageView = storage
	engine, err := plugin.Factory(context.Background(), conf)
	if err != nil {
		t.Fatal(err)
	}
	call = func(op logical.Operation, path string, data map[string]any) map[string]any {
		t.Helper()
		resp, err := engine.HandleRequest(context.Background(), &logical.Request{Operation: op, Path: path, Data: data, Storage: storage})
		if err != nil || resp != nil && resp.IsError() {
			t.Fatalf("%s %s: %v %v", op, path, err, resp)
		}
		if resp == nil { // deleted
			return nil
		}
		return resp.Data
	}
	return engine, storage, call
}

// TestResolveRoundTrip: the proxy's code encodes each request and decodes
// each answer, the engine's code decodes and answers in between, single and
// batched. A field renamed or retyped on one side only, a reason the table
// does not know or a grant the proxy cannot act on fails here.
func TestResolveRoundTrip(t *testing.T) {
	ctx := context.Background()
	engine, storage, call := realEngine(t)
	const key = "sk_live_RoundTrip0123456789"
	route := map[string]any{
		"upstream": "https://api.example.com/base", "allowed_paths": "/v1/**", "allowed_methods": "GET,POST",
		"credential": key, "auth_type": resolve.AuthHeader, "auth_header": "x-api-key", "auth_format": "Key " + resolve.Placeholder,
		"headers": map[string]any{"anthropic-version": "2023-06-01"}, "bound_cidrs": "127.0.0.0/8",
	}
	call(logical.UpdateOperation, "routes/r", route)
	call(logical.UpdateOperation, "routes/gone", route)
	mint := call(logical.UpdateOperation, "token/r", nil)
	tok := mint["token"].(string)
	revoked := call(logical.UpdateOperation, "token/r", nil)
	call(logical.DeleteOperation, "tokens/"+revoked["accessor"].(string), nil)
	once := call(logical.UpdateOperation, "token/r", map[string]any{"num_uses": 1})["token"].(string)
	orphan := call(logical.UpdateOperation, "token/gone", nil)["token"].(string)
	call(logical.DeleteOperation, "routes/gone", nil)
	unknown, err := token.New(rand.Reader, "phm_")
	if err != nil {
		t.Fatal(err)
	}

	vault := engineOverHTTP(t, engine, storage)
	rc := httpCalls{http: vault.Client(), mountURL: vault.URL + "/v1/phantom/", timeout: 10 * time.Second, forward: new(atomic.Bool)}
	req := func(tok, method, path, ip string) resolve.Request {
		return resolve.Request{Token: tok, Method: method, Path: path, ClientIP: ip}
	}
	allowed := req(tok, "POST", "/v1/customers", "127.0.0.1")
	cases := []struct {
		req  resolve.Request
		want string // deny reason, "" for allowed
	}{
		{allowed, ""},
		{req(tok, "DELETE", "/v1/customers", "127.0.0.1"), resolve.ReasonMethodNotAllowed},
		{req(tok, "GET", "/v2/other", "127.0.0.1"), resolve.ReasonPathNotAllowed},
		{req(tok, "GET", "/v1/customers", "10.0.0.1"), resolve.ReasonCIDRDenied},
		{req(tok, "get", "/v1/customers", "127.0.0.1"), resolve.ReasonBadRequest},
		{req(unknown, "GET", "/v1/customers", "127.0.0.1"), resolve.ReasonUnknownToken},
		{req(revoked["token"].(string), "GET", "/v1/customers", "127.0.0.1"), resolve.ReasonRevoked},
		{req(orphan, "GET", "/v1/customers", "127.0.0.1"), resolve.ReasonRouteDeleted},
		{req(once, "GET", "/v1/customers", "127.0.0.1"), ""},
		{req(once, "GET", "/v1/customers", "127.0.0.1"), resolve.ReasonUsesExhausted},
	}
	check := func(how string, i int, d *Decision) {
		t.Helper()
		want := cases[i].want
		if want == "" {
			if !*d.Allowed || d.Grant == nil {
				t.Fatalf("%s %d: want allowed, got %+v", how, i, d)
			}
			return
		}
		if *d.Allowed || d.Reason != want || d.Grant != nil {
			t.Fatalf("%s %d: want %s, got %+v", how, i, want, d)
		}
		if !resolve.Known(d.Reason) {
			t.Errorf("%s %d: the engine's reason %q is not in the contract's table", how, i, d.Reason)
		}
	}
	for i, c := range cases {
		ds, err := rc.resolve(ctx, "t", []resolve.Request{c.req})
		if err != nil {
			t.Fatalf("single %d: %v", i, err)
		}
		check("single", i, ds[0])
	}

	// The grant as the proxy acts on it is the route as written.
	ds, err := rc.resolve(ctx, "t", []resolve.Request{allowed})
	if err != nil {
		t.Fatal(err)
	}
	g := ds[0].Grant
	expires, _ := time.Parse(time.RFC3339, mint["expires_at"].(string))
	if ds[0].Route != "r" || ds[0].Accessor != mint["accessor"] || g.Route != "r" || g.Accessor != mint["accessor"] ||
		g.Upstream.String() != "https://api.example.com/base" || g.Credential != key ||
		g.AuthType != resolve.AuthHeader || g.AuthName != "x-api-key" || g.AuthFormat != "Key "+resolve.Placeholder ||
		len(g.Headers) != 1 || g.Headers["anthropic-version"] != "2023-06-01" || !g.ExpiresAt.Equal(expires) || g.ExpiresAt.IsZero() {
		t.Fatalf("grant: %+v", g)
	}

	// The same requests batched get the same decisions (once is spent by now).
	cases[8].want = resolve.ReasonUsesExhausted
	batch := make([]resolve.Request, len(cases))
	for i, c := range cases {
		batch[i] = c.req
	}
	ds, err = rc.resolve(ctx, "t", batch)
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range ds {
		check("batched", i, d)
	}
	if bg := ds[0].Grant; bg.Credential != key || bg.AuthName != "x-api-key" || bg.Headers["anthropic-version"] != "2023-06-01" || !bg.ExpiresAt.Equal(expires) {
		t.Fatalf("batched grant: %+v", bg)
	}
}

// TestBatchFitsTheEngine: the proxy never sends more requests in one call
// than the engine takes.
func TestBatchFitsTheEngine(t *testing.T) {
	if maxBatch > resolve.MaxBatch {
		t.Fatalf("the proxy batches %d requests, the engine takes %d", maxBatch, resolve.MaxBatch)
	}
}

// TestTunnelRoundTrip: the proxy's tunnel call against the engine's tunnel
// path, over HTTP as Vault carries it.
func TestTunnelRoundTrip(t *testing.T) {
	ctx := context.Background()
	engine, storage, call := realEngine(t)
	call(logical.UpdateOperation, "routes/r", map[string]any{"upstream": "https://API.example.com", "allowed_paths": "/v1/**",
		"allowed_methods": "GET", "credential": "sk_live_RoundTrip0123456789"})
	tok := call(logical.UpdateOperation, "token/r", nil)["token"].(string)
	revoked := call(logical.UpdateOperation, "token/r", nil)
	call(logical.DeleteOperation, "tokens/"+revoked["accessor"].(string), nil)

	var path atomic.Value
	vault := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path.Store(r.Method + " " + r.URL.Path)
		var data map[string]any
		json.NewDecoder(r.Body).Decode(&data)
		resp, err := engine.HandleRequest(r.Context(), &logical.Request{Operation: logical.PatchOperation,
			Path: strings.TrimPrefix(r.URL.Path, "/v1/phantom/"), Data: data, Storage: storage})
		if err != nil || resp.IsError() {
			w.WriteHeader(http.StatusBadRequest)
			json.NewEncoder(w).Encode(map[string]any{"errors": []string{"refused"}})
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"data": resp.Data})
	}))
	t.Cleanup(vault.Close)
	rc := httpCalls{http: vault.Client(), mountURL: vault.URL + "/v1/phantom/", timeout: 10 * time.Second, forward: new(atomic.Bool)}
	target, err := origin.Parse("API.Example.com:443") // as the proxy reads a CONNECT
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		req    resolve.TunnelRequest
		reason string
	}{
		{resolve.TunnelRequest{Origin: target.String(), Token: tok, ClientIP: "127.0.0.1"}, ""},
		{resolve.TunnelRequest{Origin: target.String()}, ""},
		{resolve.TunnelRequest{Origin: "api.example.com:8443", Token: tok}, resolve.ReasonOriginNotAllowed},
		{resolve.TunnelRequest{Origin: "other.example.com:443"}, resolve.ReasonOriginNotAllowed},
		{resolve.TunnelRequest{Origin: target.String(), Token: revoked["token"].(string)}, resolve.ReasonRevoked},
	} {
		a, err := rc.tunnel(ctx, "t", c.req)
		if err != nil {
			t.Fatal(err)
		}
		if c.reason == "" && !*a.Allowed || c.reason != "" && (*a.Allowed || a.Reason != c.reason || !resolve.Known(a.Reason)) {
			t.Errorf("%+v: %+v", c.req, a)
		}
	}
	if got := path.Load(); got != "PATCH /v1/phantom/tunnel" {
		t.Fatalf("the call went to %v", got)
	}
}
