package e2e

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phantomvault/phantom/e2e/harness"
)

func (a *formsAPI) serve(w http.ResponseWriter, r *http.Request) {
	// The credential as injected, and as it sits on the wire.
	secret, wire := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "), ""
	if k := r.URL.Query().Get("key"); k != "" {
		secret = k
		_, wire, _ = strings.Cut(r.URL.RawQuery, "key=")
		wire, _, _ = strings.Cut(wire, "&")
	}
	var dump bytes.Buffer
	fmt.Fprintf(&dump, "%s %s %s\r\n", r.Method, r.RequestURI, r.Proto)
	r.Header.Write(&dump)
	dumped := dump.String()
	inDump := strings.Index(dumped, secret)
	if wire != "" {
		inDump = strings.Index(dumped, wire)
	}

	var body strings.Builder
	var echoes []echo
	add := func(label, text string, from, to int) {
		body.WriteString(label + ": ")
		echoes = append(echoes, echo{label: label, from: body.Len() + from, to: body.Len() + to})
		body.WriteString(text + "\n")
	}
	for _, e := range textEncoders {
		prefix := `{"error":"Incorrect API key provided: `
		add(e.name, e.enc(prefix+secret+`"}`), len(e.enc(prefix)), len(e.enc(prefix+secret)))
		if wire != "" {
			prefix = "GET /echo?key="
			add(e.name+" of the query", e.enc(prefix+wire+" HTTP/1.1"), len(e.enc(prefix)), len(e.enc(prefix+wire)))
		}
	}
	for _, d := range byteDumps {
		text := d.enc(secret)
		add(d.name, "["+text+"]", 1, 1+len(text))
	}
	n := len(secret)
	if wire != "" {
		n = len(wire)
	}
	for align := range 3 {
		pad := strings.Repeat("#", (3-inDump%3+align)%3)
		at := len(pad) + inDump // at%3 == align
		for _, b := range base64Encodings {
			// Characters holding any bit of the key's bytes.
			add(fmt.Sprintf("base64 %s of the request, key at byte %d of 3", b.name, align),
				b.enc.EncodeToString([]byte(pad+dumped)), 8*at/6, (8*(at+n)+5)/6)
		}
	}

	headers := http.Header{}
	for _, h := range []struct {
		name, value string
		from, to    int
	}{
		{"X-Echo-Json", dotnetEscape(secret, "%04X"), 0, -1},
		{"X-Echo-Php", strings.ReplaceAll(jsonEscaped(secret, false), "/", `\/`), 0, -1},
		{"X-Echo-Percent", lowerPercent(url.QueryEscape(secret)), 0, -1},
		{"X-Echo-Base64", base64.StdEncoding.EncodeToString([]byte("#" + secret)), 8 / 6, (8*(1+len(secret)) + 5) / 6},
	} {
		if h.to < 0 {
			h.to = len(h.value)
		}
		headers.Set(h.name, h.value)
		w.Header().Set(h.name, h.value)
		echoes = append(echoes, echo{label: "header " + h.name, header: h.name, from: h.from, to: h.to})
	}

	a.mu.Lock()
	a.body, a.headers, a.echoes = body.String(), headers, echoes
	a.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain")
	io.WriteString(w, body.String())
}

// TestScrubberCatchesEveryEncoding: an upstream echoes the injected key in
// every form mainstream encoders write it, including base64 of a dump of the
// request at each alignment; through the real proxy, with the key resolved
// from a real Vault, the agent receives none of it: every byte carrying a
// bit of the key arrives masked, and the response keeps its length.
func TestScrubberCatchesEveryEncoding(t *testing.T) {
	v := harness.StartDevVault(t)
	api := startFormsAPI(t)
	v.MustCLI(t, "write", "phantom/routes/bearer", "upstream="+api.URL, "allowed_paths=/echo", "allowed_methods=GET",
		"credential="+awsStyleKey)
	v.MustCLI(t, "write", "phantom/routes/query", "upstream="+api.URL, "allowed_paths=/echo", "allowed_methods=GET",
		"auth_type=query", "auth_query_param=key", "credential="+azureStyleKey)
	p := harness.StartProxy(t, v)

	for _, route := range []string{"bearer", "query"} {
		t.Run(route, func(t *testing.T) {
			tok, _ := v.Mint(t, route)
			code, got, header := p.Do(t, "GET", "/echo", tok, "", nil)
			if code != 200 {
				t.Fatalf("status %d: %s", code, got)
			}
			api.mu.Lock()
			sent, echoes := api.body, api.echoes
			api.mu.Unlock()
			if len(got) != len(sent) {
				t.Fatalf("the body was %d bytes upstream and %d at the agent", len(sent), len(got))
			}
			leaked := 0
			for _, e := range echoes {
				out := got
				if e.header != "" {
					out = header.Get(e.header)
				}
				if e.to > len(out) {
					t.Errorf("%s: %q is shorter than the upstream's", e.label, out)
					continue
				}
				if part := out[e.from:e.to]; part != strings.Repeat("*", len(part)) {
					leaked++
					t.Errorf("the agent received the key as %s: %q", e.label, part)
				}
			}
			// Masking is exact: the labels around the forms came through.
			for _, e := range echoes {
				if e.header == "" && !strings.Contains(got, e.label+": ") {
					t.Errorf("the label %q was masked", e.label)
				}
			}
			t.Logf("%d forms echoed, %d leaked", len(echoes), leaked)
		})
	}
}

// TestScrubberHoldBackDoesNotDependOnTheKey: an upstream (or an agent
// steering one) streams a chunk that ends in a guess of the key's first
// bytes and then pauses. What the agent receives before the pause must be
// the same whether the guess is right or wrong; otherwise the timing of the
// response is an oracle that reveals the key a byte at a time.
func TestScrubberHoldBackDoesNotDependOnTheKey(t *testing.T) {
	v := harness.StartDevVault(t)
	resume := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(resume) }) })
	filler := strings.Repeat(`{"id":"cus_123","name":"Ada Lovelace"},`, 100)
	up := harness.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		n := len(r.URL.Query().Get("n"))
		guess := key[:n]
		if r.URL.Query().Get("guess") == "wrong" {
			guess = strings.Repeat("Q", n)
		}
		io.WriteString(w, filler+guess)
		w.(http.Flusher).Flush()
		select {
		case <-resume:
		case <-r.Context().Done():
		}
		io.WriteString(w, "\n")
	}))
	v.MustCLI(t, "write", "phantom/routes/stream", "upstream="+up.URL, "allowed_paths=/stream",
		"allowed_methods=GET", "credential="+awsStyleKey)
	p := harness.StartProxy(t, v)
	tok, _ := v.Mint(t, "stream")

	// before reads what arrives until the upstream has been quiet for a
	// while (it is paused), and cancels the request.
	before := func(n int, guess string) int {
		req, _ := http.NewRequest("GET", p.URL+"/stream?guess="+guess+"&n="+strings.Repeat("x", n), nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		got := make(chan int)
		go func() {
			buf := make([]byte, 64<<10)
			for {
				k, err := resp.Body.Read(buf)
				if k > 0 {
					got <- k
				}
				if err != nil {
					close(got)
					return
				}
			}
		}()
		total := 0
		for {
			select {
			case k, ok := <-got:
				if !ok {
					return total
				}
				total += k
			case <-time.After(300 * time.Millisecond):
				return total
			}
		}
	}
	for _, n := range []int{1, 4, 13, len(awsStyleKey) - 1} {
		right, wrong := before(n, "right"), before(n, "wrong")
		if right != wrong {
			t.Errorf("a guess of the key's first %d bytes: %d bytes reached the agent when right, %d when wrong", n, right, wrong)
		}
		if right == 0 || right >= len(filler)+n {
			t.Errorf("a guess of %d bytes: %d of %d bytes arrived before the pause", n, right, len(filler)+n)
		}
	}
}
