package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/phantomvault/phantom/e2e/harness"
)

// Keys with '/' and '+' (and '=' padding): an AWS-style secret access key
// and an Azure-style storage account key (both the vendors' published
// examples).
const (
	awsStyleKey   = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
	azureStyleKey = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// echo is one place the upstream wrote the key: where, under which
// encoding, and which bytes of it carry bits of the key.
type echo struct {
	label    string
	header   string // "" for the body
	from, to int    // in the header value, or in the body
}

// formsAPI answers every request by echoing the credential it received in
// every form mainstream encoders write it: raw, JSON (Go with and without
// HTML escaping, PHP, .NET, Gson), percent (upper and lower case, query and
// path), form encoding, HTML, hex, and base64 of a dump of the request at
// each of the three alignments in both alphabets, padded or not; a few in
// headers too. It records what it sent, so the test can tell which bytes
// must come out masked.
type formsAPI struct {
	*harness.Upstream
	mu sync.Mutex
	// last response sent
	body    string
	headers http.Header
	echoes  []echo
}

func startFormsAPI(t *testing.T) *formsAPI {
	t.Helper()
	a := &formsAPI{}
	a.Upstream = harness.StartUpstream(t, http.HandlerFunc(a.serve))
	return a
}

// textEncoders write text character by character, so the key's bytes
// land in enc(prefix+key)[len(enc(prefix)):].
var textEncoders = []struct {
	name string
	enc  func(string) string
}{
	{"raw", func(s string) string { return s }},
	{"Go encoding/json", func(s string) string { return jsonEscaped(s, true) }},
	{"Go encoding/json without HTML escaping", func(s string) string { return jsonEscaped(s, false) }},
	// PHP json_encode: '/' as "\/".
	{"PHP json_encode", func(s string) string { return strings.ReplaceAll(jsonEscaped(s, false), "/", `\/`) }},
	// .NET System.Text.Json: + < > & ' " ` as \u00XX, upper-case hex.
	{".NET System.Text.Json", func(s string) string { return dotnetEscape(s, "%04X") }},
	// Gson: the same set in lower-case hex.
	{"Gson", func(s string) string { return dotnetEscape(s, "%04x") }},
	{"url.QueryEscape", url.QueryEscape},
	{"url.PathEscape", url.PathEscape},
	{"percent-encoding, lower-case hex", func(s string) string { return lowerPercent(url.QueryEscape(s)) }},
	{"form encoding", func(s string) string { return strings.TrimPrefix(url.Values{"k": {s}}.Encode(), "k=") }},
	{"form encoding, lower-case hex", func(s string) string {
		return lowerPercent(strings.TrimPrefix(url.Values{"k": {s}}.Encode(), "k="))
	}},
	{"html.EscapeString", html.EscapeString},
	// The entities and he npm packages (cheerio, htmlparser2), PHP
	// htmlentities with ENT_HTML5: HTML5 named references.
	{"HTML5 named references", html5Named},
	// Zero-padded numeric references, hex and decimal.
	{"zero-padded &#x00HH;", func(s string) string { return everyPunct(s, "&#x%04X;") }},
	{"zero-padded &#00DD;", func(s string) string { return everyPunct(s, "&#%04d;") }},
	{"hex", func(s string) string { return hex.EncodeToString([]byte(s)) }},
}

// byteDumps write a string byte by byte with separators.
var byteDumps = []struct {
	name string
	enc  func(string) string
}{
	{"Python bytes.hex(' ')", func(s string) string { return byteList(s, "%02x", " ") }},
	{"hex with colons, upper case", func(s string) string { return byteList(s, "%02X", ":") }},
	{"Node JSON of a Buffer", func(s string) string { return byteList(s, "%d", ",") }},
	{"decimal bytes with spaces", func(s string) string { return byteList(s, "%d", ", ") }},
	{".NET BitConverter.ToString", func(s string) string { return byteList(s, "%02X", "-") }},
	{"Python bytes.hex('|')", func(s string) string { return byteList(s, "%02x", "|") }},
	{"Go %v of a []byte", func(s string) string { return strings.Trim(fmt.Sprintf("%v", []byte(s)), "[]") }},
	{"Go %#v of a []byte", func(s string) string {
		return strings.TrimSuffix(strings.TrimPrefix(fmt.Sprintf("%#v", []byte(s)), "[]byte{"), "}")
	}},
	{"C array, upper case", func(s string) string { return byteList(s, "0x%02X", ",") }},
	{"xxd, groups of 2 bytes", func(s string) string { return grouped(hex.EncodeToString([]byte(s)), 4) }},
	{`Python escapes (\x..)`, func(s string) string { return byteList(s, `\x%02x`, "") }},
	{"every byte percent-encoded", func(s string) string { return byteList(s, "%%%02X", "") }},
	{"UTF-16LE", func(s string) string { return utf16Text(s, binary.LittleEndian)[:2*len(s)-1] }},
	{"UTF-16BE", func(s string) string { return utf16Text(s, binary.BigEndian)[1:] }},
	{"UTF-32LE", func(s string) string { return utf32Text(s, binary.LittleEndian)[:4*len(s)-3] }},
	{"UTF-32BE", func(s string) string { return utf32Text(s, binary.BigEndian)[3:] }},
}

// grouped writes h in groups of n characters separated by spaces.
func grouped(h string, n int) string {
	var b strings.Builder
	for i := 0; i < len(h); i += n {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(h[i:min(i+n, len(h))])
	}
	return b.String()
}

// utf16Text and utf32Text are an ASCII s in UTF-16 or UTF-32: the tests
// keep the bytes that carry bits of s (the NULs at one end carry none).
func utf16Text(s string, order binary.AppendByteOrder) string {
	var b []byte
	for _, u := range utf16.Encode([]rune(s)) {
		b = order.AppendUint16(b, u)
	}
	return string(b)
}

func utf32Text(s string, order binary.AppendByteOrder) string {
	var b []byte
	for _, r := range s {
		b = order.AppendUint32(b, uint32(r))
	}
	return string(b)
}

func byteList(s, format, sep string) string {
	parts := make([]string, len(s))
	for i := range len(s) {
		parts[i] = fmt.Sprintf(format, s[i])
	}
	return strings.Join(parts, sep)
}

// html5Names are the names the entities package writes for ASCII
// punctuation (per the HTML5 named character references).
var html5Names = map[rune]string{
	'!': "&excl;", '"': "&quot;", '#': "&num;", '$': "&dollar;", '%': "&percnt;", '&': "&amp;",
	'\'': "&apos;", '(': "&lpar;", ')': "&rpar;", '*': "&ast;", '+': "&plus;", ',': "&comma;",
	'.': "&period;", '/': "&sol;", ':': "&colon;", ';': "&semi;", '<': "&lt;", '=': "&equals;",
	'>': "&gt;", '?': "&quest;", '@': "&commat;", '[': "&lsqb;", '\\': "&bsol;", ']': "&rsqb;",
	'^': "&Hat;", '_': "&lowbar;", '`': "&grave;", '{': "&lcub;", '|': "&verbar;", '}': "&rcub;",
}

func html5Named(s string) string {
	var b strings.Builder
	for _, r := range s {
		if name, ok := html5Names[r]; ok {
			b.WriteString(name)
		} else {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// everyPunct writes every ASCII character other than a letter or digit with
// format.
func everyPunct(s, format string) string {
	var b strings.Builder
	for i := range len(s) {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c >= 0x80 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, format, c)
		}
	}
	return b.String()
}

var base64Encodings = []struct {
	name string
	enc  *base64.Encoding
}{
	{"std", base64.StdEncoding}, {"std unpadded", base64.RawStdEncoding},
	{"url", base64.URLEncoding}, {"url unpadded", base64.RawURLEncoding},
}

func jsonEscaped(s string, escapeHTML bool) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(escapeHTML)
	enc.Encode(s)
	out := strings.TrimSpace(b.String())
	return out[1 : len(out)-1]
}

func dotnetEscape(s, hexFormat string) string {
	var b strings.Builder
	for _, r := range jsonEscaped(s, false) {
		if strings.ContainsRune(`+<>&'`+"`", r) {
			fmt.Fprintf(&b, `\u`+hexFormat, r)
		} else {
			b.WriteRune(r)
		}
	}
	return b.String()
}

var percentEscape = regexp.MustCompile(`%[0-9A-F]{2}`)

func lowerPercent(s string) string { return percentEscape.ReplaceAllStringFunc(s, strings.ToLower) }

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
