package engine

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/phantomvault/phantom/internal/resolve"
)

// refusingAddr is an address nothing listens on: connections are refused.
func refusingAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := "http://" + ln.Addr().String()
	ln.Close()
	return addr
}

// nodeAnswering is a Vault node that answers every call but sys/health
// with status and errMsg, counting the calls.
func nodeAnswering(t *testing.T, status int, errMsg string, calls *atomic.Int64) string {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/sys/health" {
			calls.Add(1)
		}
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"errors":[%q]}`, errMsg)
	}))
	t.Cleanup(s.Close)
	return s.URL
}

// TestFailoverPastRefusedAndSealedNodes: a node that refuses connections
// and a sealed one (503 "Vault is sealed") did not process the call, so
// login and resolve move on to the node that serves; the refusing node is
// then skipped, and the failovers are counted per node.
func TestFailoverPastRefusedAndSealedNodes(t *testing.T) {
	var sealedCalls atomic.Int64
	refused := refusingAddr(t)
	sealed := nodeAnswering(t, http.StatusServiceUnavailable, "Vault is sealed", &sealedCalls)
	fv := &fakeVault{healthy: true, resolve: func(string) (int, string) { return http.StatusOK, allowJSON }}
	good := httptest.NewServer(fv)
	t.Cleanup(good.Close)
	v := newTestResolverAt(t, refused+","+sealed+","+good.URL)
	for range 3 {
		if d, err := v.Resolve(context.Background(), resolve.Request{Token: "x", Method: "GET", Path: "/"}); err != nil || !*d.Allowed {
			t.Fatalf("resolve: %+v %v", d, err)
		}
	}
	if fv.calls.Load() != 3 || fv.logins.Load() != 1 {
		t.Fatalf("the serving node had %d resolve calls and %d logins; want 3 and 1", fv.calls.Load(), fv.logins.Load())
	}
	if v.nodes.nodes[0].healthy.Load() || v.nodes.nodes[1].healthy.Load() || !v.nodes.nodes[2].healthy.Load() {
		t.Fatal("the refusing and sealed nodes are not marked down, or the serving one is")
	}
	if n := sealedCalls.Load(); n > 1 {
		t.Fatalf("the sealed node got %d calls once marked down; want at most the first", n)
	}
	// Failovers are counted per node. (The first health probe may mark the
	// refusing node down before the login, which then never tries it: so
	// take it for healthy and in use once more, and resolve.)
	v.nodes.nodes[0].healthy.Store(true)
	v.nodes.current.Store(0)
	if d, err := v.Resolve(context.Background(), resolve.Request{Token: "x", Method: "GET", Path: "/"}); err != nil || !*d.Allowed {
		t.Fatalf("resolve past the refusing node: %+v %v", d, err)
	}
	m := v.session.metrics.(*recorder)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failovers[refused] == 0 {
		t.Errorf("no failover counted from %s: %v", refused, m.failovers)
	}
	if healthy, seen := m.healthy[good.URL]; !seen || !healthy {
		t.Errorf("%s not recorded healthy: %v", good.URL, m.healthy)
	}
	if healthy, seen := m.healthy[sealed]; !seen || healthy {
		t.Errorf("%s not recorded down: %v", sealed, m.healthy)
	}
	if !v.Ready(context.Background()) {
		t.Fatal("not ready while a node serves")
	}
}

// TestCallThatReachedVaultIsNotRepeated: a call that may have reached the
// engine (the connection dropped after the request was written, or a
// standby answered that forwarding failed) fails closed and is never sent
// to another node: a num_uses token would lose a use.
func TestCallThatReachedVaultIsNotRepeated(t *testing.T) {
	for name, drop := range map[string]http.HandlerFunc{
		"connection dropped after the request": func(w http.ResponseWriter, r *http.Request) {
			io.ReadAll(r.Body)
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		},
		"forwarding to the active node failed": func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"errors":["no active Vault instance found"]}`)
		},
		"timeout": func(w http.ResponseWriter, r *http.Request) {
			io.ReadAll(r.Body)
			<-r.Context().Done()
		},
	} {
		t.Run(name, func(t *testing.T) {
			first := &fakeVault{healthy: true}
			var firstResolves atomic.Int64
			s1 := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/v1/phantom/resolve" {
					firstResolves.Add(1)
					drop(w, r)
					return
				}
				first.ServeHTTP(w, r)
			}))
			t.Cleanup(s1.Close)
			other := &fakeVault{healthy: true, resolve: func(string) (int, string) { return http.StatusOK, allowJSON }}
			s2 := httptest.NewServer(other)
			t.Cleanup(s2.Close)
			v := newTestResolverAt(t, s1.URL+","+s2.URL)
			v.cfg.Timeout = 300 * time.Millisecond
			v.calls.timeout = 300 * time.Millisecond
			start := time.Now()
			if d, err := v.Resolve(context.Background(), resolve.Request{Token: "x", Method: "GET", Path: "/"}); err == nil {
				t.Fatalf("a decision (%+v) after the call reached a node that dropped it", d)
			}
			if firstResolves.Load() != 1 || other.calls.Load() != 0 {
				t.Fatalf("%d calls on the node that got it, %d repeated on another", firstResolves.Load(), other.calls.Load())
			}
			if took := time.Since(start); took > time.Second {
				t.Fatalf("took %v, past -vault-timeout", took)
			}
		})
	}
}
