package e2e

import (
	"bufio"
	"crypto/rand"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phantomvault/phantom/internal/token"
)

// Flood sizes and the proxy's defaults they are judged against
// (-unknown-token-burst 20, -unknown-token-rate 1/s).
const (
	floodSize    = 150
	defaultBurst = 20
	defaultRate  = 1.0
)

// vaultCalls counts, in Vault's own audit log, the requests that reached
// the engine's path (phantom/tunnel or phantom/resolve): what the proxy
// really made Vault do, whatever the proxy says of itself.
func vaultCalls(t *testing.T, auditLog, path string) int {
	t.Helper()
	f, err := os.Open(auditLog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	n := 0
	for sc.Scan() {
		var e struct {
			Type    string `json:"type"`
			Request struct {
				Path string `json:"path"`
			} `json:"request"`
		}
		if json.Unmarshal(sc.Bytes(), &e) == nil && e.Type == "request" && e.Request.Path == path {
			n++
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// connectFrom sends CONNECT target from the loopback address src (another
// client, as the proxy tells them apart), with proxyToken unless empty, on a
// fresh connection and returns the answer's status; on 200 the open tunnel
// too, else nil (and the connection closed).
func (st *forwardStack) connectFrom(src, target, proxyToken string) (int, *tunnel, error) {
	d := net.Dialer{Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	conn, err := d.Dial("tcp", strings.TrimPrefix(st.fp.Forward, "http://"))
	if err != nil {
		return 0, nil, err
	}
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	io.WriteString(conn, connectRequest(target, proxyToken))
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		conn.Close()
		return 0, nil, fmt.Errorf("CONNECT %s from %s: no answer: %w", target, src, err)
	}
	if resp.StatusCode != 200 {
		conn.Close()
		return resp.StatusCode, nil, nil
	}
	host, _, _ := net.SplitHostPort(target)
	tc := tls.Client(conn, &tls.Config{ServerName: host, RootCAs: st.caPool})
	if err := tc.Handshake(); err != nil {
		conn.Close()
		return 0, nil, fmt.Errorf("TLS in the tunnel to %s: %w", target, err)
	}
	return 200, &tunnel{conn: tc, br: bufio.NewReader(tc)}, nil
}

// getOnce sends GET path inside tn (with token as Bearer unless empty),
// returns the answer and closes the tunnel.
func (tn *tunnel) getOnce(host, path, token string) (int, string, error) {
	defer tn.conn.Close()
	req := "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nConnection: close\r\n"
	if token != "" {
		req += "Authorization: Bearer " + token + "\r\n"
	}
	if _, err := io.WriteString(tn.conn, req+"\r\n"); err != nil {
		return 0, "", err
	}
	resp, err := http.ReadResponse(tn.br, nil)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), nil
}

// flood sends n CONNECTs at once from src, to target(i) with proxyToken(i)
// each, and returns how many got each status and how long the burst took.
func (st *forwardStack) flood(t *testing.T, src string, n int, target, proxyToken func(i int) string) (map[int]int, time.Duration) {
	t.Helper()
	start := time.Now()
	var mu sync.Mutex
	codes := map[int]int{}
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, _, err := st.connectFrom(src, target(i), proxyToken(i))
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			codes[code]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	return codes, time.Since(start)
}

// mostCalls is the most Vault calls a client without a credential may
// cause in elapsed: the burst, the refill meanwhile, and one for rounding.
func mostCalls(elapsed time.Duration) int {
	return defaultBurst + int(elapsed.Seconds()*defaultRate) + 1
}

// TestForwardTokenlessFlood: a client with no credential cannot drive
// Vault's load through the forward listener. Counted from Vault's side (its
// audit log), a burst of tokenless CONNECTs to hosts no route names, a
// burst to one such host, a burst of forged proxy credentials and forged
// tokens inside tunnels each reach the engine at most the per-address burst
// (plus its refill), each refused one is answered (403/407/429), and an
// agent with a live token on another address is served all the while.
func TestForwardTokenlessFlood(t *testing.T) {
	st := startForwardStack(t, false)
	auditLog := filepath.Join(st.v.Home, "vault-audit.log")
	st.v.MustCLI(t, "audit", "enable", "file", "file_path="+auditLog)
	tokA, _ := st.v.Mint(t, "a", "ttl=1h")
	hostA := "api-a.phantom.test:" + st.a.Port
	tunnelCalls := func() int { return vaultCalls(t, auditLog, "phantom/tunnel") }
	resolveCalls := func() int { return vaultCalls(t, auditLog, "phantom/resolve") }

	// A legitimate agent on 127.0.0.2: CONNECT with its token and a request
	// inside, over and over while the floods run. Each costs Vault one
	// tunnel check and one resolve, which the bounds below allow for.
	stop := make(chan struct{})
	var legit sync.WaitGroup
	var legitMu sync.Mutex
	var legitCONNECTs, legitOK int
	var legitErr []string
	legit.Add(1)
	go func() {
		defer legit.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			legitMu.Lock()
			legitCONNECTs++ // counted before: a check under way is allowed for
			legitMu.Unlock()
			code, tn, err := st.connectFrom("127.0.0.2", hostA, tokA)
			var answer string
			if err == nil && code == 200 {
				code, answer, err = tn.getOnce(hostA, "/v1/customers", "")
			}
			legitMu.Lock()
			if err == nil && code == 200 {
				legitOK++
			} else {
				legitErr = append(legitErr, fmt.Sprintf("%d %v %s", code, err, answer))
			}
			legitMu.Unlock()
			time.Sleep(50 * time.Millisecond)
		}
	}()
	legitSoFar := func() (connects, served int) {
		legitMu.Lock()
		defer legitMu.Unlock()
		return legitCONNECTs, legitOK
	}
	// bounded runs a burst and checks the tunnel checks it cost Vault.
	bounded := func(t *testing.T, src string, target, proxyToken func(int) string, answers ...int) {
		t.Helper()
		before := tunnelCalls()
		legitBefore, _ := legitSoFar()
		codes, elapsed := st.flood(t, src, floodSize, target, proxyToken)
		calls := tunnelCalls() - before
		legitAfter, _ := legitSoFar()
		legitCalls := legitAfter - legitBefore + 1
		t.Logf("%d CONNECTs in %v: answers %v; %d tunnel checks reached Vault (%d of them may be the live agent's)", floodSize, elapsed, codes, calls, legitCalls)
		n := 0
		for _, a := range answers {
			n += codes[a]
		}
		if n != floodSize {
			t.Fatalf("answers %v: want only %v", codes, answers)
		}
		if most := mostCalls(elapsed) + legitCalls; calls > most {
			t.Fatalf("%d CONNECTs from one address made %d tunnel checks in Vault; want at most %d (the burst, its refill, the live agent's)", floodSize, calls, most)
		}
	}

	t.Run("tokenless CONNECTs to hosts no route names", func(t *testing.T) {
		bounded(t, "127.0.0.1", func(i int) string { return fmt.Sprintf("h%d.nowhere.phantom.test:443", i) },
			func(int) string { return "" }, 403, 429)
	})
	t.Run("tokenless CONNECTs to one host no route names", func(t *testing.T) {
		bounded(t, "127.0.0.3", func(int) string { return "one.nowhere.phantom.test:443" },
			func(int) string { return "" }, 403, 429)
	})
	t.Run("CONNECTs with forged proxy credentials", func(t *testing.T) {
		forged := make([]string, floodSize)
		for i := range forged {
			var err error
			if forged[i], err = token.New(rand.Reader, "phm_"); err != nil {
				t.Fatal(err)
			}
		}
		bounded(t, "127.0.0.4", func(int) string { return hostA }, func(i int) string { return forged[i] }, 407, 429)
	})
	t.Run("forged tokens inside tunnels opened without one", func(t *testing.T) {
		// A route names A, so a tokenless CONNECT to it is allowed; each
		// forged token's refusal closes the tunnel, so each gets one.
		const n = 60
		beforeResolves, beforeChecks := resolveCalls(), tunnelCalls()
		legitBefore, servedBefore := legitSoFar()
		start := time.Now()
		codes := map[int]int{}
		for range n {
			forged, _ := token.New(rand.Reader, "phm_")
			code, tn, err := st.connectFrom("127.0.0.5", hostA, "")
			if err == nil && code == 200 {
				code, _, err = tn.getOnce(hostA, "/v1/customers", forged)
			}
			if err != nil {
				t.Fatal(err)
			}
			codes[code]++
		}
		elapsed := time.Since(start)
		legitAfter, servedAfter := legitSoFar()
		resolves := resolveCalls() - beforeResolves
		checks := tunnelCalls() - beforeChecks
		t.Logf("%d forged tokens in tunnels in %v: answers %v; %d resolves and %d tunnel checks reached Vault", n, elapsed, codes, resolves, checks)
		if codes[401]+codes[429] != n {
			t.Fatalf("answers %v: want only 401 and 429", codes)
		}
		if most := mostCalls(elapsed) + servedAfter - servedBefore + 1; resolves > most {
			t.Fatalf("%d forged tokens in tunnels made %d resolves in Vault; want at most %d", n, resolves, most)
		}
		// The tokenless CONNECTs to A were allowed (not charged) until the
		// forged tokens spent the address's budget: then 429 at CONNECT.
		if most := codes[401] + mostCalls(elapsed) + legitAfter - legitBefore + 1; checks > most {
			t.Fatalf("%d tunnel checks, want at most %d", checks, most)
		}
	})
	close(stop)
	legit.Wait()
	legitMu.Lock()
	defer legitMu.Unlock()
	if len(legitErr) > 0 || legitOK == 0 {
		t.Fatalf("the agent with a live token, on another address, during the floods: %d served; failures: %s", legitOK, strings.Join(legitErr, "; "))
	}
	t.Logf("the agent with a live token was served %d times during the floods", legitOK)
	if st.evil.Connections() != 0 || strings.Contains(st.a.log(), "phm_") {
		t.Fatal("a flood reached an upstream")
	}
}
