package e2e

import (
	"crypto/rand"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/phantomvault/phantom/e2e/harness"
	"github.com/phantomvault/phantom/internal/testutil"
	"github.com/phantomvault/phantom/internal/token"
)

// TestSlowAndForgedClients: a body that never comes cannot hold the proxy,
// a refusal is answered at once, connections per listener are bounded, and
// forged tokens from one client stop reaching Vault after a burst.
func TestSlowAndForgedClients(t *testing.T) {
	v := harness.StartDevVault(t)
	api := startEchoAPI(t)
	v.MustCLI(t, "write", "phantom/routes/echo", "upstream="+api.URL, "allowed_paths=/v1/**", "allowed_methods=GET,POST", "credential="+echoingKey)
	p := harness.StartProxy(t, v, "-body-stall-timeout=1s", "-max-connections=8", "-max-connections-per-client=-1",
		"-unknown-token-burst=5", "-unknown-token-rate=0.5")
	addr := strings.TrimPrefix(p.URL, "http://")
	tok, _ := v.Mint(t, "echo")

	t.Run("a refusal does not wait for an announced body", func(t *testing.T) {
		for _, expect := range []string{"", "Expect: 100-continue\r\n"} {
			answer := answeredAndClosed(t, addr, "POST /v1/x HTTP/1.1\r\nHost: "+addr+"\r\nContent-Length: 100\r\n"+expect+"\r\n")
			if !strings.HasPrefix(answer, "HTTP/1.1 401 ") {
				t.Fatalf("no token, body never sent (%q): want 401 at once, got %q", expect, answer)
			}
		}
	})
	t.Run("a refused client keeps no connection", func(t *testing.T) {
		answer := answeredAndClosed(t, addr, "GET /v1/x HTTP/1.1\r\nHost: "+addr+"\r\n\r\n")
		if !strings.HasPrefix(answer, "HTTP/1.1 401 ") {
			t.Fatalf("no token, keep-alive asked for: %q", answer)
		}
	})
	t.Run("an allowed body that stalls is cut off", func(t *testing.T) {
		answer := answeredAndClosed(t, addr, "POST /v1/upload HTTP/1.1\r\nHost: "+addr+"\r\nAuthorization: Bearer "+tok+"\r\nContent-Length: 100\r\n\r\nonly part")
		if !strings.HasPrefix(answer, "HTTP/1.1 408 ") || !strings.Contains(answer, "body_timeout") {
			t.Fatalf("a body stalled past -body-stall-timeout got %q, want 408", answer)
		}
	})
	t.Run("connections are bounded per listener", func(t *testing.T) {
		var held []net.Conn
		t.Cleanup(func() {
			for _, c := range held {
				c.Close()
			}
		})
		for range 8 {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			io.WriteString(c, "GET /v1/x HTTP/1.1\r\nHost: a\r\n") // headers never end
			held = append(held, c)
		}
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET /v1/x HTTP/1.1\r\nHost: "+addr+"\r\nConnection: close\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		if n, _ := c.Read(make([]byte, 1)); n != 0 {
			t.Fatal("a ninth connection was served while eight were open")
		}
		// The header timeout frees the slots; the ninth is then served.
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		raw, _ := io.ReadAll(c)
		if !strings.HasPrefix(string(raw), "HTTP/1.1 401 ") {
			t.Fatalf("the waiting connection got %q", raw)
		}
	})
	t.Run("forged tokens stop reaching Vault after a burst", func(t *testing.T) {
		calls := func() float64 { return metric(t, p, "phantom_proxy_resolve_seconds_count") }
		before := calls()
		var limited int
		for range 40 {
			forged, err := token.New(rand.Reader, "phm_")
			if err != nil {
				t.Fatal(err)
			}
			answer := exchangeOn(t, addr, "GET /v1/x HTTP/1.1\r\nHost: "+addr+"\r\nAuthorization: Bearer "+forged+"\r\nConnection: close\r\n\r\n")
			switch {
			case strings.HasPrefix(answer, "HTTP/1.1 401 "):
			case strings.HasPrefix(answer, "HTTP/1.1 429 ") && strings.Contains(answer, "Retry-After: "):
				limited++
			default:
				t.Fatalf("a forged token got %q", answer)
			}
		}
		resolves := calls() - before
		t.Logf("40 forged tokens: %.0f resolves reached Vault, %d answered 429", resolves, limited)
		if resolves > 10 || limited < 30 {
			t.Fatalf("%.0f of 40 forged tokens reached Vault (%d limited); want at most the burst and a little refill", resolves, limited)
		}
		// A token the engine allowed before (the stalled upload's) still
		// passes: agents sharing the address keep working.
		if answer := exchangeOn(t, addr, "GET /v1/x HTTP/1.1\r\nHost: "+addr+"\r\nAuthorization: Bearer "+tok+"\r\nConnection: close\r\n\r\n"); !strings.HasPrefix(answer, "HTTP/1.1 200 ") {
			t.Fatalf("a token allowed before, right after the burst: %q", answer)
		}
		// A token never seen allowed waits for the budget to refill.
		fresh, _ := v.Mint(t, "echo")
		freshReq := "GET /v1/x HTTP/1.1\r\nHost: " + addr + "\r\nAuthorization: Bearer " + fresh + "\r\nConnection: close\r\n\r\n"
		if answer := exchangeOn(t, addr, freshReq); !strings.HasPrefix(answer, "HTTP/1.1 429 ") {
			t.Fatalf("a new token right after the burst: %q", answer)
		}
		testutil.Eventually(t, 10*time.Second, func() bool { return strings.HasPrefix(exchangeOn(t, addr, freshReq), "HTTP/1.1 200 ") },
			"the new token was not served once the budget refilled")
	})

	// One client cannot take every connection of the listener.
	t.Run("connections are bounded per client", func(t *testing.T) {
		q := harness.StartProxy(t, v, "-max-connections-per-client=4")
		qaddr := strings.TrimPrefix(q.URL, "http://")
		for range 4 {
			c, err := net.Dial("tcp", qaddr)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			io.WriteString(c, "GET /v1/x HTTP/1.1\r\nHost: a\r\n") // headers never end
		}
		time.Sleep(200 * time.Millisecond) // let the proxy accept them
		c, err := net.Dial("tcp", qaddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "GET /v1/x HTTP/1.1\r\nHost: "+qaddr+"\r\nConnection: close\r\n\r\n")
		// Closed at once: EOF, or a reset if our request crossed the close.
		raw, err := io.ReadAll(c)
		var netErr net.Error
		if len(raw) != 0 || errors.As(err, &netErr) && netErr.Timeout() {
			t.Fatalf("a fifth connection from one address got %q, %v; want it closed at once", raw, err)
		}
	})
}
