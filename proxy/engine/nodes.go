package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// vaultHealthInterval is how often each node's sys/health is asked; the
// probe is bounded by min(Config.Timeout, vaultHealthProbeTimeout).
const (
	vaultHealthInterval     = time.Second
	vaultHealthProbeTimeout = time.Second
	maxVaultErrorBody       = 64 << 10 // read of a 5xx answer to classify it
)

// vaultNode is one Vault address of the list.
type vaultNode struct {
	addr    string   // as configured, for logs and metric labels
	url     *url.URL // scheme and host replace those of each request
	healthy atomic.Bool
}

// vaultNodes is the round tripper under the Vault client (login, renewal,
// unwrap, health) and the engine's calls when -vault-addr lists several
// nodes. It sends each request to the node in use, and moves it to another
// node only when the request provably never reached a node that could act
// on it (notProcessed): a call that may have reached the engine is never
// repeated, since a num_uses token would lose a use.
type vaultNodes struct {
	nodes   []*vaultNode
	current atomic.Int32 // index of the node in use
	next    http.RoundTripper
	timeout time.Duration
	metrics Metrics
	log     hclog.Logger
}

func newVaultNodes(addrs []string, next http.RoundTripper, timeout time.Duration, m Metrics, log hclog.Logger) (*vaultNodes, error) {
	n := &vaultNodes{next: next, timeout: timeout, metrics: m, log: log}
	var path string
	for i, a := range addrs {
		u, err := url.Parse(a)
		if err != nil {
			return nil, fmt.Errorf("the Vault address %q is not a URL", a)
		}
		if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
			return nil, fmt.Errorf("the Vault address %q: several addresses must each be http:// or https:// with a host", a)
		}
		if i == 0 {
			path = strings.TrimSuffix(u.Path, "/")
		} else if strings.TrimSuffix(u.Path, "/") != path {
			return nil, fmt.Errorf("the Vault addresses %q and %q differ in path", addrs[0], a)
		}
		node := &vaultNode{addr: a, url: u}
		node.healthy.Store(true) // until a probe or a call says otherwise
		n.nodes = append(n.nodes, node)
		m.NodeHealthy(a, true)
	}
	return n, nil
}

// order is the nodes to try: the one in use, then the other healthy ones,
// then the unhealthy ones (a node marked down may be back before its next
// probe, and trying it costs only a refused connection).
func (n *vaultNodes) order() []*vaultNode {
	start := int(n.current.Load())
	out := make([]*vaultNode, 0, len(n.nodes))
	var down []*vaultNode
	for i := range n.nodes {
		node := n.nodes[(start+i)%len(n.nodes)]
		if node.healthy.Load() {
			out = append(out, node)
		} else {
			down = append(down, node)
		}
	}
	return append(out, down...)
}

func (n *vaultNodes) index(node *vaultNode) int32 {
	for i, x := range n.nodes {
		if x == node {
			return int32(i)
		}
	}
	return 0
}

func (n *vaultNodes) setHealthy(node *vaultNode, ok bool, why string) {
	if node.healthy.Swap(ok) != ok {
		if ok {
			n.log.Info("Vault node is serving again", "node", node.addr)
		} else {
			n.log.Warn("Vault node is not serving", "node", node.addr, "why", why)
		}
	}
	n.metrics.NodeHealthy(node.addr, ok)
}

// RoundTrip sends req to the node in use, and to the next one only while
// each node tried did not process it.
func (n *vaultNodes) RoundTrip(req *http.Request) (*http.Response, error) {
	var body []byte
	if req.Body != nil && req.Body != http.NoBody {
		var err error
		body, err = io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, err
		}
	}
	nodes := n.order()
	for i, node := range nodes {
		r := req.Clone(req.Context())
		r.URL.Scheme, r.URL.Host, r.Host = node.url.Scheme, node.url.Host, ""
		if body != nil {
			r.Body = io.NopCloser(bytes.NewReader(body))
			r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
			r.ContentLength = int64(len(body))
		}
		resp, err := n.next.RoundTrip(r)
		why := ""
		resp, why = notProcessed(resp, err)
		if why == "" {
			if !node.healthy.Load() && err == nil {
				n.setHealthy(node, true, "")
			}
			n.current.Store(n.index(node))
			return resp, err
		}
		n.setHealthy(node, false, why)
		if i == len(nodes)-1 || req.Context().Err() != nil {
			return resp, err
		}
		if resp != nil {
			resp.Body.Close()
		}
		n.metrics.Failover(node.addr)
		n.log.Debug("Vault node did not process the call; trying the next", "node", node.addr, "why", why, "next", nodes[i+1].addr)
	}
	panic("unreachable: vaultNodes has at least one node")
}

// notProcessed says why (non-empty) Vault provably did not act on a call,
// so that sending it to another node cannot repeat it. It returns resp with
// its body intact for the caller.
//
//   - The connection failed before the request was written: the dial
//     failed (refused, unreachable). net/http itself re-sends a request on a
//     reused connection only when nothing of it was written.
//   - 503 "Vault is sealed": a sealed node refuses every request before
//     routing it. vault/ha.go Core.Leader returns consts.ErrSealed when
//     sealed, http/handler.go handleRequestForwarding answers that error
//     before serving or forwarding anything, and sdk/logical
//     AdjustErrorStatusCode turns ErrSealed into 503 (Vault 1.21.0).
//   - 500 "local node not active but active cluster node not found": a
//     standby that knows no active node, answered by
//     handleRequestForwarding (http/handler.go) before serving or
//     forwarding anything.
//
// Anything else may have reached the engine: a connection that failed
// after the request was written, a timeout, and also 503 "no active Vault
// instance found", which respondStandby (http/handler.go) answers when
// forwarding to the active node failed, possibly after the active node
// acted on it. Those fail closed.
func notProcessed(resp *http.Response, err error) (*http.Response, string) {
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return nil, "connection failed: " + op.Err.Error()
		}
		return resp, ""
	}
	if resp.StatusCode != http.StatusServiceUnavailable && resp.StatusCode != http.StatusInternalServerError {
		return resp, ""
	}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxVaultErrorBody))
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(raw))
	var out struct{ Errors []string }
	if json.Unmarshal(raw, &out) != nil {
		return resp, ""
	}
	for _, e := range out.Errors {
		switch {
		case resp.StatusCode == http.StatusServiceUnavailable && e == "Vault is sealed":
			return resp, "sealed"
		case resp.StatusCode == http.StatusInternalServerError && e == "local node not active but active cluster node not found":
			return resp, "standby without an active node"
		}
	}
	return resp, ""
}

// probe asks one node's sys/health whether it serves: 200 with standbyok
// (active, or a standby that forwards to the active node); sealed (503),
// uninitialised (501) or silent nodes do not.
func (n *vaultNodes) probe(ctx context.Context, node *vaultNode) {
	ctx, cancel := context.WithTimeout(ctx, min(n.timeout, vaultHealthProbeTimeout))
	defer cancel()
	u := *node.url
	u.Path = strings.TrimSuffix(u.Path, "/") + "/v1/sys/health"
	u.RawQuery = "standbyok=true&perfstandbyok=true"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return
	}
	resp, err := n.next.RoundTrip(req)
	if err != nil {
		if ctx.Err() == nil || errors.Is(err, context.DeadlineExceeded) {
			n.setHealthy(node, false, err.Error())
		}
		return
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, maxVaultErrorBody))
	resp.Body.Close()
	n.setHealthy(node, resp.StatusCode == http.StatusOK, "sys/health answered "+resp.Status)
}

// probeAll probes every node at once and reports whether any serves.
func (n *vaultNodes) probeAll(ctx context.Context) bool {
	var wg sync.WaitGroup
	for _, node := range n.nodes {
		wg.Add(1)
		go func() { defer wg.Done(); n.probe(ctx, node) }()
	}
	wg.Wait()
	for _, node := range n.nodes {
		if node.healthy.Load() {
			return true
		}
	}
	return false
}

// watch probes every node each vaultHealthInterval until ctx ends, so a
// node that died is skipped after at most one failed call and a node that
// returned is used again.
func (n *vaultNodes) watch(ctx context.Context) {
	t := time.NewTicker(vaultHealthInterval)
	defer t.Stop()
	for {
		n.probeAll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
