package e2e

import (
	"encoding/binary"
	"mime"
	"net/http"
	"strings"
	"testing"
	"unicode/utf16"

	"github.com/phantomvault/phantom/e2e/harness"
)

// startNegotiatingAPI answers every request with an error that quotes the key it
// received, in the charset it negotiates the way ASP.NET Core MVC does: the
// charset of the first Accept media range that names one it can write, else
// the request Content-Type's charset (as its gRPC JSON transcoding does),
// else UTF-8; and it declares that charset. /always-utf16 answers in UTF-16
// and says so; /undeclared-utf16 answers in UTF-16LE and says nothing.
func startNegotiatingAPI(t *testing.T) *harness.Upstream {
	t.Helper()
	return harness.StartUpstream(t, http.HandlerFunc(negotiate))
}

func negotiate(w http.ResponseWriter, r *http.Request) {
	body := `{"error":"Incorrect API key provided: ` + strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ") + `"}`
	charset, declare := negotiatedCharset(r), true
	switch r.URL.Path {
	case "/always-utf16":
		charset = "utf-16"
	case "/undeclared-utf16":
		charset, declare = "utf-16le", false
	}
	if declare {
		w.Header().Set("Content-Type", "application/json; charset="+charset)
	} else {
		w.Header().Set("Content-Type", "application/json")
	}
	w.Write(encodeIn(charset, body))
}

// negotiatedCharset is ASP.NET Core's choice, for the encodings it writes.
func negotiatedCharset(r *http.Request) string {
	for _, v := range r.Header.Values("Accept") {
		for _, mediaRange := range strings.Split(v, ",") {
			if _, params, err := mime.ParseMediaType(mediaRange); err == nil {
				if cs := strings.ToLower(params["charset"]); cs != "" && encodeIn(cs, "") != nil {
					return cs
				}
			}
		}
	}
	if _, params, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err == nil {
		if cs := strings.ToLower(params["charset"]); cs != "" && encodeIn(cs, "") != nil {
			return cs
		}
	}
	return "utf-8"
}

// encodeIn writes s in charset, or returns nil for one it cannot write.
func encodeIn(charset, s string) []byte {
	out := []byte{}
	switch charset {
	case "utf-8":
		return append(out, s...)
	case "utf-16", "utf-16be":
		for _, u := range utf16.Encode([]rune(s)) {
			out = binary.BigEndian.AppendUint16(out, u)
		}
	case "utf-16le":
		for _, u := range utf16.Encode([]rune(s)) {
			out = binary.LittleEndian.AppendUint16(out, u)
		}
	case "utf-32", "utf-32be":
		for _, c := range s {
			out = binary.BigEndian.AppendUint32(out, uint32(c))
		}
	default:
		return nil
	}
	return out
}

// TestAgentCannotAskForUTF16: an agent that asks an upstream for another
// charset (in Accept, quoted or not, or in a bodiless request's
// Content-Type) gets the answer in UTF-8, with the key masked; a request body
// in such a charset is refused before the upstream; an answer declared in a
// charset the scrubber cannot read is refused with 502; and one in UTF-16
// that declares nothing comes out with the key masked.
func TestAgentCannotAskForUTF16(t *testing.T) {
	v := harness.StartDevVault(t)
	api := startNegotiatingAPI(t)
	p := harness.StartProxy(t, v)
	v.MustCLI(t, "write", "phantom/routes/aspnet", "upstream="+api.URL, "allowed_paths=/**",
		"allowed_methods=GET,PUT", "credential="+realKey)
	tok, _ := v.Mint(t, "aspnet")

	noKey := func(t *testing.T, b string) {
		t.Helper()
		for _, cs := range []string{"utf-8", "utf-16be", "utf-16le", "utf-32be"} {
			if strings.Contains(b, string(encodeIn(cs, realKey)[1:])) {
				t.Fatalf("the key came back in %s: %q", cs, b)
			}
		}
	}

	for _, c := range []struct {
		name   string
		header http.Header
	}{
		{"Accept charset", http.Header{"Accept": {"application/json; charset=utf-16"}}},
		{"Accept charset, quoted and big-endian", http.Header{"Accept": {`application/json;charset="UTF-16BE"`}}},
		{"Accept charset in a second media range", http.Header{"Accept": {"text/html, application/json; q=0.9; charset=utf-32"}}},
		{"bodiless Content-Type charset", http.Header{"Content-Type": {"application/json; charset=utf-16"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, b, header := p.Do(t, "GET", "/v1/x", tok, "", c.header)
			if code != 200 {
				t.Fatalf("status %d: %s", code, b)
			}
			if ct := header.Get("Content-Type"); ct != "application/json; charset=utf-8" {
				t.Fatalf("the upstream answered in %q: the charset reached it", ct)
			}
			noKey(t, b)
			if !strings.Contains(b, "Incorrect API key provided: ***") {
				t.Fatalf("no masked key in %q", b)
			}
		})
	}

	t.Run("request body in UTF-16", func(t *testing.T) {
		before := api.Count()
		code, b, _ := p.Do(t, "PUT", "/v1/x", tok, string(encodeIn("utf-16", `{"a":1}`)),
			http.Header{"Content-Type": {"application/json; charset=utf-16"}})
		if code != 400 || !strings.Contains(b, "charset") {
			t.Fatalf("status %d: %s", code, b)
		}
		if api.Count() != before {
			t.Fatal("the upstream saw a request body in UTF-16")
		}
	})

	t.Run("answer declared in UTF-16", func(t *testing.T) {
		before := api.Count()
		code, b, _ := p.Do(t, "GET", "/always-utf16", tok, "", nil)
		if code != 502 || !strings.Contains(b, "charset") {
			t.Fatalf("status %d: %q", code, b)
		}
		if api.Count() != before+1 {
			t.Fatal("the upstream was not asked")
		}
		noKey(t, b)
	})

	t.Run("answer in UTF-16 without a declared charset", func(t *testing.T) {
		code, b, _ := p.Do(t, "GET", "/undeclared-utf16", tok, "", nil)
		if code != 200 {
			t.Fatalf("status %d: %q", code, b)
		}
		noKey(t, b)
		if !strings.Contains(b, string(encodeIn("utf-16le", "provided: ")[1:])) {
			t.Fatalf("not the upstream's answer: %q", b)
		}
	})
}
