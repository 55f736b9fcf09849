package e2e

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"testing"

	"github.com/phantomvault/phantom/e2e/harness"
)

// keyInNamesAPI answers, on a raw connection, with the key it received
// where only a header's name or a fold can carry it: a 103 and a header
// named after its hex, a header folded in the middle of the key, and an
// undeclared trailer named after its hex in upper case.
func keyInNamesAPI(t *testing.T) string {
	t.Helper()
	ln := harness.Listen(t)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				key := strings.TrimPrefix(req.Header.Get("Authorization"), "Bearer ")
				h := hex.EncodeToString([]byte(key))
				half := len(key) / 2
				fmt.Fprintf(c, "HTTP/1.1 103 Early Hints\r\nX-%s: 1\r\n\r\n", h)
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nX-%s: 1\r\nX-Folded: %s\r\n %s\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n", h, key[:half], key[half:])
				fmt.Fprintf(c, "2\r\nok\r\n0\r\nX-%s: z\r\n\r\n", strings.ToUpper(h))
			}(c)
		}
	}()
	return "http://" + ln.Addr().String()
}

// TestKeyInHeaderNames: a hostile upstream cannot hand the agent the key as
// a header's name (in a response, a 103 or a trailer, in any case) or cut
// by a folded line.
func TestKeyInHeaderNames(t *testing.T) {
	v := harness.StartDevVault(t)
	api := keyInNamesAPI(t)
	p := harness.StartProxy(t, v)
	v.MustCLI(t, "write", "phantom/routes/names", "upstream="+api, "allowed_paths=/**",
		"allowed_methods=GET", "credential="+realKey)
	tok, _ := v.Mint(t, "names")

	var interim []string
	trace := &httptrace.ClientTrace{Got1xxResponse: func(_ int, h textproto.MIMEHeader) error {
		for name := range h {
			interim = append(interim, name)
		}
		return nil
	}}
	req, err := http.NewRequest("GET", p.URL+"/x", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var body strings.Builder
	bufio.NewReader(resp.Body).WriteTo(&body)
	resp.Body.Close()

	hexKey := hex.EncodeToString([]byte(realKey))
	everything := strings.ToLower(fmt.Sprint(interim, resp.Header, resp.Trailer, body.String()))
	if resp.StatusCode != 200 || body.String() != "ok" {
		t.Fatalf("%d %q", resp.StatusCode, body.String())
	}
	for _, form := range []string{hexKey, strings.ToLower(realKey), strings.ToLower(realKey[len(realKey)/2:])} {
		if strings.Contains(everything, form) {
			t.Fatalf("the agent got the key (%q) in %s", form, everything)
		}
	}
	if f := resp.Header.Get("X-Folded"); strings.Trim(f, "*") != "" {
		t.Fatalf("a folded value came through as %q", f)
	}
}
