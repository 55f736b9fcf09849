package proxy

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/internal/testutil"
	"github.com/phantomvault/phantom/proxy/engine"
	"github.com/phantomvault/phantom/proxy/engine/enginetest"
)

const (
	testHMACSecret = "hmacSECRETneverLeavesVault0123456789"
	testHMACKeyID  = "keyID-vmPUZE6mv9SD5VNHk4HlWFsOr6aK"
	testHMACTime   = "1700000000123"
)

// signingEngine plays the engine of a Binance-style hmac route: it asks for
// the inputs first, then signs query+body with testHMACSecret.
type signingEngine struct {
	*enginetest.Engine
	place resolve.HMACGrant
}

func (e *signingEngine) Resolve(ctx context.Context, req resolve.Request) (*engine.Decision, error) {
	if req.HMAC == nil {
		e.Engine.Resolve(ctx, req) // recorded
		a := resolve.Deny(resolve.ReasonHMACInputs, "send hmac")
		a.HMACNeeds = &resolve.HMACNeeds{Body: e.place.Body, MaxBody: e.place.MaxBody}
		return &engine.Decision{Answer: a}, nil
	}
	d, err := e.Engine.Resolve(ctx, req)
	if err != nil || d.Grant == nil {
		return d, err
	}
	body, err := base64.StdEncoding.DecodeString(req.HMAC.Body)
	if err != nil {
		return nil, err
	}
	sig := binanceSignature(e.place.SignedQuery(req.HMAC.Query, testHMACTime), string(body))
	g := *d.Grant
	g.AuthType, g.Credential, g.AuthName, g.AuthFormat = resolve.AuthHMAC, "", "", ""
	g.HMAC = &resolve.HMACSigned{HMACGrant: e.place, HMACSignature: resolve.HMACSignature{Timestamp: testHMACTime, Signature: sig}}
	d.Grant = &g
	return d, nil
}

func binanceSignature(query, body string) string {
	m := hmac.New(sha256.New, []byte(testHMACSecret))
	m.Write([]byte(query + body))
	return hex.EncodeToString(m.Sum(nil))
}

// binanceUpstream checks a request as Binance does: the signature, the last
// query parameter, over the query before it and the body; the key header.
// It echoes the key id and the signature back.
func binanceUpstream(t *testing.T) *httptest.Server {
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rest, sig, ok := strings.Cut(r.URL.RawQuery, "&signature=")
		if !ok || strings.Contains(sig, "&") || sig != binanceSignature(rest, string(body)) || r.Header.Get("X-MBX-APIKEY") != testHMACKeyID {
			http.Error(w, `{"code":-1022,"msg":"Signature for this request is not valid."}`, http.StatusUnauthorized)
			return
		}
		io.WriteString(w, `{"ok":true,"query":"`+rest+`","key":"`+testHMACKeyID+`","sig":"`+sig+`"}`)
	}))
	t.Cleanup(ts.Close)
	return ts
}

func newHMACProxy(t *testing.T, upstream string, maxBody int64) (*testProxy, *signingEngine) {
	t.Helper()
	tok := mintToken(t)
	u, _ := url.Parse(upstream)
	eng := &signingEngine{Engine: enginetest.New(), place: resolve.HMACGrant{
		SignatureQuery: "signature", TimestampQuery: "timestamp", KeyID: testHMACKeyID, KeyIDHeader: "X-MBX-APIKEY",
		Body: resolve.HMACBodyRaw, MaxBody: maxBody,
	}}
	eng.Allow(tok, &resolve.Grant{Route: "bn", Accessor: "pha_hmac", Upstream: u, Headers: map[string]string{}})
	logs := &testutil.LockedBuffer{}
	srv, err := NewServer(Config{VaultAddr: "http://unused", AuditFile: filepath.Join(t.TempDir(), "audit.log")}, eng, testMetrics(t),
		hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Debug}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	return &testProxy{url: ts.URL, engine: eng.Engine, token: tok, srv: srv, logs: logs}, eng
}

func (p *testProxy) send(t *testing.T, method, target, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, p.url+target, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+p.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestHMACSignedRequest(t *testing.T) {
	up := binanceUpstream(t)
	p, eng := newHMACProxy(t, up.URL, 1024)

	// The agent's own timestamp and signature parameters never reach the
	// upstream; the body is forwarded byte for byte as signed.
	status, body := p.send(t, "POST", "/api/v3/order?symbol=BTCUSDT&timestamp=1&signature=forged", "side=BUY&quantity=1")
	if status != 200 {
		t.Fatalf("status %d: %s", status, body)
	}
	if !strings.Contains(body, `"query":"symbol=BTCUSDT&timestamp=`+testHMACTime+`"`) {
		t.Errorf("upstream saw another query: %s", body)
	}
	if strings.Contains(body, testHMACKeyID) || strings.Contains(body, binanceSignature("symbol=BTCUSDT&timestamp="+testHMACTime, "side=BUY&quantity=1")) {
		t.Errorf("the key id or the signature came back unmasked: %s", body)
	}
	reqs := eng.Resolves()
	if len(reqs) != 2 || reqs[0].HMAC != nil || reqs[1].HMAC == nil {
		t.Fatalf("resolves: %+v", reqs)
	}
	if in := reqs[1].HMAC; in.Query != "symbol=BTCUSDT&timestamp=1&signature=forged" || in.Body != base64.StdEncoding.EncodeToString([]byte("side=BUY&quantity=1")) {
		t.Errorf("hmac inputs: %+v", in)
	}

	// A body without a length (chunked) is read and signed as well.
	req, _ := http.NewRequest("POST", p.url+"/api/v3/order", io.NopCloser(strings.NewReader("a=1")))
	req.Header.Set("Authorization", "Bearer "+p.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("chunked body: status %d", resp.StatusCode)
	}

	// Larger than the route signs: 413, and no signature asked for.
	status, body = p.send(t, "POST", "/api/v3/order", strings.Repeat("x", 1025))
	if status != http.StatusRequestEntityTooLarge || !strings.Contains(body, "hmac_max_body") {
		t.Errorf("large body: %d %s", status, body)
	}
	if n := len(eng.Resolves()); n != 5 {
		t.Errorf("%d resolves, want 5 (the large body's first only)", n)
	}
	if logs := p.logs.String(); strings.Contains(logs, testHMACKeyID) {
		t.Errorf("the log holds the key id:\n%s", logs)
	}
}

// TestHMACAnswerWithoutSignatureIsRefused: a grant that lacks its signature
// never becomes a request sent unsigned.
func TestHMACAnswerWithoutSignatureIsRefused(t *testing.T) {
	a := resolve.Allow("r", "pha_1", time.Now())
	a.RouteGrant = &resolve.RouteGrant{Upstream: "https://api.example.com", AuthType: resolve.AuthHMAC, HMAC: &resolve.HMACGrant{SignatureHeader: "X-Sig"}}
	if _, err := a.Validate(); err == nil {
		t.Fatal("an hmac answer without a signature validated")
	}
	a.HMACSignature = &resolve.HMACSignature{Signature: "s"}
	a.RouteGrant.Credential = "leaked"
	if _, err := a.Validate(); err == nil {
		t.Fatal("an hmac answer carrying a credential validated")
	}
}
