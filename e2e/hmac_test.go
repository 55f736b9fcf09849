package e2e

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/phantomvault/phantom/e2e/harness"
)

// Secrets of the two signed APIs: none may appear anywhere but in Vault's
// storage (and the stand-in upstreams that check them).
const (
	binanceSecret  = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
	binanceKeyID   = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
	coinbaseKeyID  = "cb0e2e4f8a9b1c3d5e7f90a1b2c3d4e5"
	coinbasePass   = "e2e-pass-phrase-x7"
	coinbaseSecret = "c2VjcmV0IG9mIHRoZSBlMmUgY29pbmJhc2Ugc3RhbmQtaW4sIG5ldmVyIHNob3duIQ=="
)

func hmacOf(key []byte, msg string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(msg))
	return m.Sum(nil)
}

// fresh reports whether a timestamp in unit (1 for seconds, 1000 for ms)
// is within a minute of now, as exchanges check it.
func fresh(ts string, unit int64) bool {
	n, err := strconv.ParseInt(ts, 10, 64)
	d := time.Since(time.UnixMilli(n * 1000 / unit))
	return err == nil && d < time.Minute && d > -time.Minute
}

// refuse answers as an exchange does, echoing what it got (which the proxy
// must mask).
func refuse(w http.ResponseWriter, r *http.Request) {
	w.WriteHeader(http.StatusUnauthorized)
	io.WriteString(w, `{"code":-1022,"msg":"Signature for this request is not valid.","got":"`+r.URL.RawQuery+" "+
		r.Header.Get("X-MBX-APIKEY")+r.Header.Get("CB-ACCESS-KEY")+r.Header.Get("CB-ACCESS-SIGN")+`"}`)
}

// binanceStandIn checks requests as Binance's SIGNED endpoints do: the
// signature, hex HMAC-SHA256 over the query before it and the body, is the
// last query parameter; timestamp is a fresh query parameter in ms; the
// key id is in X-MBX-APIKEY. It echoes the key id and signature back.
func binanceStandIn(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rest, sig, ok := strings.Cut(r.URL.RawQuery, "&signature=")
	q, _ := strconvQuery(rest)
	if !ok || strings.Contains(sig, "&") || sig != hex.EncodeToString(hmacOf([]byte(binanceSecret), rest+string(body))) ||
		r.Header.Get("X-MBX-APIKEY") != binanceKeyID || !fresh(q["timestamp"], 1000) {
		refuse(w, r)
		return
	}
	io.WriteString(w, `{"ok":true,"path":"`+r.URL.Path+`","apiKey":"`+binanceKeyID+`","signature":"`+sig+`"}`)
}

// coinbaseStandIn checks requests as Coinbase Exchange does: CB-ACCESS-SIGN
// is base64 HMAC-SHA256, with the base64-decoded secret, over timestamp +
// method + request path (with the query) + body.
func coinbaseStandIn(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	key, _ := base64.StdEncoding.DecodeString(coinbaseSecret)
	ts := r.Header.Get("CB-ACCESS-TIMESTAMP")
	want := base64.StdEncoding.EncodeToString(hmacOf(key, ts+r.Method+r.URL.RequestURI()+string(body)))
	if r.Header.Get("CB-ACCESS-SIGN") != want || !fresh(ts, 1) ||
		r.Header.Get("CB-ACCESS-KEY") != coinbaseKeyID || r.Header.Get("CB-ACCESS-PASSPHRASE") != coinbasePass {
		refuse(w, r)
		return
	}
	io.WriteString(w, `{"id":"order-1","path":"`+r.URL.Path+`","key":"`+coinbaseKeyID+`","passphrase":"`+coinbasePass+`"}`)
}

func strconvQuery(raw string) (map[string]string, error) {
	out := map[string]string{}
	for pair := range strings.SplitSeq(raw, "&") {
		k, v, _ := strings.Cut(pair, "=")
		out[k] = v
	}
	return out, nil
}

// TestHMACSignedAPIs: two real signing schemes through the real stack. The
// engine signs; the proxy never holds the secret; what is forwarded is
// what was signed; a token gets no signature outside its scope; no secret
// reaches an agent, a log or an audit line.
func TestHMACSignedAPIs(t *testing.T) {
	v := harness.StartDevVault(t)
	vaultAudit := filepath.Join(v.Home, "audit.log")
	v.MustCLI(t, "audit", "enable", "file", "file_path="+vaultAudit)
	bn := harness.StartUpstream(t, http.HandlerFunc(binanceStandIn))
	cb := harness.StartUpstream(t, http.HandlerFunc(coinbaseStandIn))
	var outputs []string
	run := func(args ...string) { outputs = append(outputs, v.MustCLI(t, args...)) }
	run("write", "phantom/routes/binance", "upstream="+bn.URL, "allowed_paths=/api/v3/**", "allowed_methods=GET,POST",
		"auth_type=hmac", "credential="+binanceSecret, "hmac_message={query}{body}", "hmac_max_body=4096",
		"hmac_signature_query=signature", "hmac_timestamp_query=timestamp", "hmac_timestamp_format=unix_ms",
		"hmac_key_id="+binanceKeyID, "hmac_key_id_header=X-MBX-APIKEY")
	run("write", "phantom/routes/coinbase", "upstream="+cb.URL+"/exchange", "allowed_paths=/orders/**,/accounts",
		"allowed_methods=GET,POST", "auth_type=hmac", "credential="+coinbaseSecret,
		"hmac_message={timestamp}{method}{path_query}{body}", "hmac_encoding=base64", "hmac_secret_encoding=base64",
		"hmac_signature_header=CB-ACCESS-SIGN", "hmac_timestamp_header=CB-ACCESS-TIMESTAMP",
		"hmac_key_id="+coinbaseKeyID, "hmac_key_id_header=CB-ACCESS-KEY",
		"hmac_passphrase="+coinbasePass, "hmac_passphrase_header=CB-ACCESS-PASSPHRASE")
	read := v.JSON(t, "read", "phantom/routes/coinbase")["data"].(map[string]any)
	if read["auth_type"] != "hmac" || read["hmac_signature_header"] != "CB-ACCESS-SIGN" || read["hmac_key_id_fingerprint"] == nil {
		t.Fatalf("route read: %v", read)
	}
	p := harness.StartProxy(t, v)
	bnTok, _ := v.Mint(t, "binance", "ttl=1h")
	cbTok, _ := v.Mint(t, "coinbase", "ttl=1h")
	var answers []string
	call := func(method, path, tok, body string, want int) string {
		t.Helper()
		code, got, _ := p.Do(t, method, path, tok, body, http.Header{"Content-Type": {"application/x-www-form-urlencoded"}})
		answers = append(answers, got)
		if code != want {
			t.Fatalf("%s %s: %d %s, want %d\nproxy output:\n%s", method, path, code, got, want, p.Out)
		}
		return got
	}

	// Binance: a GET without a body, a POST with one; the agent's own
	// timestamp and signature parameters are replaced.
	call("GET", "/api/v3/account?recvWindow=5000", bnTok, "", 200)
	got := call("POST", "/api/v3/order?symbol=BTCUSDT&timestamp=1&signature=forged", bnTok, "side=BUY&type=MARKET&quantity=0.01", 200)
	if strings.Contains(got, binanceKeyID) || !strings.Contains(got, `"apiKey":"****`) {
		t.Errorf("the key id came back unmasked: %s", got)
	}
	if reqs := bn.Requests(); !strings.HasPrefix(reqs[1].URI, "/api/v3/order?symbol=BTCUSDT&timestamp=") || string(reqs[1].Body) != "side=BUY&type=MARKET&quantity=0.01" {
		t.Errorf("upstream got %s", reqs[1].Dump())
	}
	if got := call("POST", "/api/v3/order", bnTok, strings.Repeat("x", 5000), 413); !strings.Contains(got, "hmac_max_body") {
		t.Errorf("large body: %s", got)
	}

	// Coinbase: the upstream's base path and the query are signed.
	call("POST", "/orders/new?client=e2e", cbTok, `{"size":"0.01","side":"buy","product_id":"BTC-USD"}`, 200)
	call("GET", "/accounts", cbTok, "", 200)

	// A token scoped to GET /accounts gets no signature for anything else,
	// through the proxy or asking the engine itself.
	narrow, _ := v.Mint(t, "coinbase", "ttl=1h", "allowed_paths=/accounts", "allowed_methods=GET")
	before := cb.Count()
	call("POST", "/orders/new", narrow, `{"size":"100"}`, 403)
	call("GET", "/orders/1", narrow, "", 403)
	if cb.Count() != before {
		t.Fatal("an out-of-scope request reached the upstream")
	}
	for _, m := range []string{"GET", "POST"} {
		_, a := v.API(t, http.MethodPut, "phantom/resolve", v.Token, map[string]any{
			"token": narrow, "method": m, "path": "/orders/new", "hmac": map[string]any{"query": "", "body": ""}})
		d, _ := a["data"].(map[string]any)
		if d["allowed"] != false || d["hmac_signature"] != nil {
			t.Fatalf("%s /orders/new with a token scoped to GET /accounts: %v", m, a)
		}
	}
	call("GET", "/accounts", narrow, "", 200)

	// A token of one route gets nothing signed with another's secret.
	call("GET", "/accounts", bnTok, "", 403)

	// The live proxy's memory: no secret, though the key id it injects is
	// there (the scan reads the right memory).
	rawSecret, _ := base64.StdEncoding.DecodeString(coinbaseSecret)
	found := harness.MemoryContains(t, p.PID(), []byte(binanceSecret), []byte(coinbaseSecret), rawSecret, []byte(binanceKeyID))
	if found[0] || found[1] || found[2] {
		t.Errorf("the proxy's memory holds an HMAC secret: %v", found[:3])
	}
	if !found[3] {
		t.Error("the proxy's memory does not hold the key id it injects: the scan reads the wrong memory")
	}

	audit, err := os.ReadFile(p.AuditFile)
	if err != nil {
		t.Fatal(err)
	}
	vaultLog, err := os.ReadFile(vaultAudit)
	if err != nil {
		t.Fatal(err)
	}
	rawCB, _ := base64.StdEncoding.DecodeString(coinbaseSecret)
	texts := map[string]string{
		"agent answers": strings.Join(answers, "\n"), "proxy output": p.Out.String(), "proxy audit log": string(audit),
		"vault audit log": string(vaultLog), "vault CLI output": strings.Join(outputs, "\n"),
	}
	for name, text := range texts {
		for _, secret := range []string{binanceSecret, coinbaseSecret, string(rawCB), hex.EncodeToString(rawCB)} {
			if strings.Contains(text, secret) {
				t.Errorf("the %s holds an HMAC secret", name)
			}
		}
		if name != "vault audit log" && name != "vault CLI output" {
			for _, public := range []string{binanceKeyID, coinbaseKeyID, coinbasePass} {
				if strings.Contains(text, public) {
					t.Errorf("the %s holds a key id or passphrase", name)
				}
			}
		}
	}
}
