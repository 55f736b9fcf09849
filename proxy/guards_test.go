package proxy

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/phantomvault/phantom/internal/resolve"
)

// Guards that change nothing a request sees when all goes well, each with a
// test that fails without it.

// TestUpstreamTransportIgnoresEnvProxy: credentials go straight to the
// upstream, never through an HTTP(S)_PROXY from the environment.
func TestUpstreamTransportIgnoresEnvProxy(t *testing.T) {
	if tr := newUpstreamTransport(Config{}); tr.Proxy != nil {
		t.Fatal("the upstream transport takes its proxy from the environment: the credential would pass through it")
	}
}

// TestLimitsRefusalIsAuditedAsDenied: a request the engine allowed and the
// limits then refused is recorded as denied, not allowed.
func TestLimitsRefusalIsAuditedAsDenied(t *testing.T) {
	up, seen := recordingUpstream(t)
	p := newTestProxy(t, up.URL, withLimits(resolve.Limits{UsageFormat: resolve.UsageOpenAI, AllowedModels: []string{"gpt-4o*"}}))
	resp, body := p.post(t, "/v1/chat/completions", `{"model":"o1","messages":[]}`)
	if resp.StatusCode != http.StatusForbidden || seen.count() != 0 {
		t.Fatalf("status %d, upstream saw %d: %s", resp.StatusCode, seen.count(), body)
	}
	recs := p.auditLines(t)
	if last := recs[len(recs)-1]; last.Decision != "denied" || last.Reason != resolve.ReasonModelNotAllowed {
		t.Fatalf("audit record: decision %q, reason %q", last.Decision, last.Reason)
	}
}

// TestRefusalsAreNotCached: a refusal carries Cache-Control: no-store, so no
// cache between agent and proxy keeps (or replays) it.
func TestRefusalsAreNotCached(t *testing.T) {
	up, _ := recordingUpstream(t)
	p := newTestProxy(t, up.URL, nil)
	for _, auth := range []string{"", "Bearer " + mintToken(t)} {
		resp, body := get(t, p.url+"/v1/x", map[string]string{"Authorization": auth})
		if resp.StatusCode/100 != 4 || resp.Header.Get("Cache-Control") != "no-store" {
			t.Fatalf("refusal %d with Cache-Control %q: %s", resp.StatusCode, resp.Header.Get("Cache-Control"), body)
		}
	}
}

// TestUpstreamCannotSetTheRequestID: the request id the agent sees is the
// one in the audit log, whatever the upstream sends under that name.
func TestUpstreamCannotSetTheRequestID(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(requestIDHeader, "forged-by-upstream")
		w.Write([]byte("ok"))
	}))
	defer up.Close()
	p := newTestProxy(t, up.URL, nil)
	resp, _ := get(t, p.url+"/v1/x", map[string]string{"Authorization": "Bearer " + p.token})
	recs := p.auditLines(t)
	got := resp.Header.Values(requestIDHeader)
	if len(got) != 1 || got[0] != recs[len(recs)-1].RequestID {
		t.Fatalf("the agent saw request ids %q, the audit log %q", got, recs[len(recs)-1].RequestID)
	}
}
