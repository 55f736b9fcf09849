package proxy

import (
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestOverrideGuard: POST bodies that name _method (as a form field, a
// multipart field or a top-level JSON key, in the spellings frameworks
// decode) fail to read, whatever the chunking; others pass unchanged.
func TestOverrideGuard(t *testing.T) {
	cases := []struct {
		name, contentType, body string
		refused                 bool
	}{
		{"form", "application/x-www-form-urlencoded", "a=1&_method=DELETE", true},
		{"form, first", "application/x-www-form-urlencoded; charset=utf-8", "_method=put&a=1", true},
		{"form, encoded", "application/x-www-form-urlencoded", "a=1&%5Fmethod=DELETE", true},
		{"form, PHP-mangled", "application/x-www-form-urlencoded", "a=1&.method=DELETE", true},
		{"form, no value", "application/x-www-form-urlencoded", "a=1&_METHOD", true},
		{"form, Stripe", "application/x-www-form-urlencoded", "payment_method=pm_1&amount=100&description=_method%3DDELETE", false},
		{"multipart", "multipart/form-data; boundary=XX", "--XX\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--XX--\r\n", true},
		{"multipart, other field", "multipart/form-data; boundary=XX", "--XX\r\nContent-Disposition: form-data; name=\"payment_method\"\r\n\r\npm_card_visa\r\n--XX--\r\n", false},
		// The scan reads no part structure: the word standing alone in a
		// part's content is refused too.
		{"multipart, the word in content", "multipart/form-data; boundary=XX", "--XX\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\n_method\r\n--XX--\r\n", true},
		{"json", "application/json", `{"model":"x","_method":"DELETE"}`, true},
		{"json, escaped", "application/json", `{"\u005fmethod":"DELETE"}`, true},
		{"json, nested", "application/json", `{"metadata":{"_method":"DELETE"},"a":["_method"]}`, false},
		{"json, value", "application/json", `{"note":"_method"}`, false},
		{"text", "text/plain", "_method=DELETE", false},
		// Read as the frameworks read the header, not as mime does.
		{"no Content-Type (Rack reads a form)", "", "_method=DELETE", true},
		{"a list PHP cuts at the comma", "application/x-www-form-urlencoded, text/plain", "_method=DELETE", true},
		{"a type PHP cuts at the space", "application/x-www-form-urlencoded x", "_method=DELETE", true},
		{"multipart/mixed (Rack parses it)", "multipart/mixed; boundary=XX", "--XX\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--XX--\r\n", true},
		{"multipart, comma before the boundary", "multipart/form-data, boundary=XX", "--XX\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\nDELETE\r\n--XX--\r\n", true},
		{"text/json (Laravel's isJson)", "text/json", `{"_method":"DELETE"}`, true},
		{"a +json type with a suffix", "application/vnd.x+json-seq", `{"_method":"DELETE"}`, true},
		{"JSON named after a form type", "application/x-www-form-urlencoded, application/json", `{"_method":"DELETE"}`, true},
		// Names as Rack, qs (Express) and PHP read them.
		{"form, Rack strips brackets", "application/x-www-form-urlencoded", "[_method]=DELETE", true},
		{"form, Rack strips a trailing bracket", "application/x-www-form-urlencoded", "_method]=DELETE", true},
		{"form, an array qs reads", "application/x-www-form-urlencoded", "_method[]=DELETE", true},
		{"form, an indexed array", "application/x-www-form-urlencoded", "_method[0]=DELETE", true},
		{"form, qs reads a leading bracket group", "application/x-www-form-urlencoded", "a=1&%5B_method%5Dzz=DELETE", true},
		{"form, qs cuts the key at ]=", "application/x-www-form-urlencoded", "[_method]x=]=DELETE", true},
		{"form, PHP cuts at NUL", "application/x-www-form-urlencoded", "_method%00x=DELETE", true},
		{"form, a control byte", "application/x-www-form-urlencoded", "a%01b=1", true},
		{"multipart, Rack's Content-ID", "multipart/form-data; boundary=XyZ", "--XyZ\r\nContent-ID: _method\r\n\r\nDELETE\r\n--XyZ--\r\n", true},
		{"multipart, a folded header", "multipart/form-data; boundary=XyZ", "--XyZ\r\nContent-Disposition: form-data;\r\n name=\"_method\"\r\n\r\nDELETE\r\n--XyZ--\r\n", true},
		{"multipart, folded without a space", "multipart/form-data; boundary=XyZ", "--XyZ\r\nContent-Disposition: form-data;\r\nname=\"_method\"\r\n\r\nDELETE\r\n--XyZ--\r\n", true},
		{"multipart, single quotes", "multipart/form-data; boundary=XyZ", "--XyZ\r\nContent-Disposition: form-data; name='_method'\r\n\r\nDELETE\r\n--XyZ--\r\n", true},
		{"multipart, bracketed", "multipart/form-data; boundary=XyZ", "--XyZ\r\nContent-Disposition: form-data; name=\"[_method]\"\r\n\r\nDELETE\r\n--XyZ--\r\n", true},
		{"multipart, backslash escapes (Rack's dequote)", "multipart/form-data; boundary=XyZ", "--XyZ\r\nContent-Disposition: form-data; name=\"\\_\\m\\e\\t\\h\\o\\d\"\r\n\r\nDELETE\r\n--XyZ--\r\n", true},
		{"multipart, a vertical tab in Content-ID", "multipart/form-data; boundary=XyZ", "--XyZ\r\nContent-ID:\v_method\r\n\r\nDELETE\r\n--XyZ--\r\n", true},
		{"multipart, a form feed before an unquoted name", "multipart/form-data; boundary=XyZ", "--XyZ\r\nContent-Disposition: form-data; name=\f_method\r\n\r\nDELETE\r\n--XyZ--\r\n", true},
		{"multipart without a boundary (Rack reads a form)", "multipart/form-data", "_method=DELETE", true},
		{"multipart, a file named _method.txt", "multipart/form-data; boundary=XyZ", "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"_method.txt\"\r\n\r\npayment_method=x\r\n--XyZ--\r\n", false},
	}
	for _, c := range cases {
		for _, chunk := range []int{1, 3, 1 << 10} {
			r, _ := http.NewRequest("POST", "http://x/", nil)
			if c.contentType != "" {
				r.Header.Set("Content-Type", c.contentType)
			}
			found := false
			g := overrideGuard(r, io.NopCloser(&chunkReader{s: c.body, n: chunk}), func() { found = true })
			if g == nil {
				if c.refused {
					t.Fatalf("%s: not guarded", c.name)
				}
				continue
			}
			got, err := io.ReadAll(g)
			if c.refused != errors.Is(err, errOverrideInBody) || c.refused != found {
				t.Fatalf("%s, chunks of %d: err %v, found %v; want refused=%v", c.name, chunk, err, found, c.refused)
			}
			if c.refused && strings.Contains(string(got), "DELETE") {
				t.Fatalf("%s, chunks of %d: the override went out: %q", c.name, chunk, got)
			}
			if !c.refused && string(got) != c.body {
				t.Fatalf("%s: body changed: %q", c.name, got)
			}
		}
	}
	for _, h := range []http.Header{
		{"Content-Type": {"text/plain", "application/x-www-form-urlencoded"}},
		{"Content-Type": {"application/x-www-form-urlencoded"}, "Content-Encoding": {"gzip"}},
		{"Content-Encoding": {"identity, deflate"}},
		{"Content-Type": {"application/json; charset=utf-7"}},
		{"Content-Type": {"application/x-www-form-urlencoded; charset=\"UTF-16\""}},
	} {
		r, _ := http.NewRequest("POST", "http://x/", nil)
		r.Header = h
		if checkBodyShape(r) == nil {
			t.Fatalf("checkBodyShape(%v) = nil, want a refusal", h)
		}
	}
	r, _ := http.NewRequest("PUT", "http://x/", nil)
	r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if overrideGuard(r, io.NopCloser(strings.NewReader("")), func() {}) != nil {
		t.Fatal("a PUT was guarded: only POST is overridden")
	}
}

// chunkReader returns s n bytes at a time.
type chunkReader struct {
	s string
	n int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if c.s == "" {
		return 0, io.EOF
	}
	k := copy(p[:min(len(p), c.n)], c.s)
	c.s = c.s[k:]
	return k, nil
}
