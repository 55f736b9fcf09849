package proxy

import (
	"net/http"
	"testing"
)

func TestWithoutCharset(t *testing.T) {
	for in, want := range map[string]string{
		"application/json":                                   "application/json",
		"application/json; charset=utf-16":                   "application/json",
		`application/json;charset="UTF-16BE"`:                "application/json",
		"application/json; Charset = utf-32; q=0.9":          "application/json; q=0.9",
		"text/plain; charset=utf-16, application/json; q=.5": "text/plain, application/json; q=.5",
		`application/json; profile="a;charset=utf-16"`:       "application/json",
		`application/json; x="a,b"; charset=utf-7`:           `application/json; x="a,b"`,
		"*/*":              "*/*",
		"; charset=utf-16": "",
	} {
		if got := withoutCharset(in); got != want {
			t.Errorf("withoutCharset(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestStripCharsets(t *testing.T) {
	h := http.Header{"Accept": {"application/json; charset=utf-16"}, "Content-Type": {"application/json; charset=utf-16"}}
	stripCharsets(h, false)
	if h.Get("Accept") != "application/json" || h.Get("Content-Type") != "application/json; charset=utf-16" {
		t.Fatalf("with a body: %v", h)
	}
	stripCharsets(h, true)
	if h.Get("Content-Type") != "application/json" {
		t.Fatalf("bodiless: %v", h)
	}
	h = http.Header{"Accept": {"; charset=utf-16"}}
	stripCharsets(h, true)
	if _, ok := h["Accept"]; ok {
		t.Fatalf("an Accept of nothing but a charset stayed: %v", h)
	}
}

func TestReadableResponseCharset(t *testing.T) {
	for ct, want := range map[string]bool{
		"":                                           true,
		"application/json":                           true,
		"application/json; charset=utf-8":            true,
		`text/html; charset="ISO-8859-15"`:           true,
		"text/plain; charset=windows-1252":           true,
		"application/json; charset=utf-16":           false,
		"application/json; charset=UTF-16LE":         false,
		`application/json; charset="utf-32"`:         false,
		"text/plain; charset=utf-7":                  false,
		"text/plain; charset=ibm037":                 false,
		"text/plain; charset=":                       false,
		"text/plain; xcharset=utf-8; charset=utf-16": false,
		"text/plain; charset=utf-8; charset=utf-16":  false,
	} {
		h := http.Header{}
		if ct != "" {
			h.Set("Content-Type", ct)
		}
		if got := readableResponseCharset(h); got != want {
			t.Errorf("%q: readable = %v, want %v", ct, got, want)
		}
	}
	h := http.Header{"Content-Type": {"application/json", "application/json; charset=utf-16"}}
	if readableResponseCharset(h) {
		t.Error("a second Content-Type value in UTF-16 passed")
	}
}

func TestBodyCharsetRefused(t *testing.T) {
	for _, c := range []struct {
		method, ct string
		length     int64
		refused    bool
	}{
		{"PUT", "application/json; charset=utf-16", 10, true},
		{"PATCH", "application/json; charset=utf-32", -1, true},
		{"PUT", "application/json; charset=utf-8", 10, false},
		{"GET", "application/json; charset=utf-16", 0, false}, // bodiless: stripped instead
		{"POST", "application/json; charset=utf-16", 0, true},
	} {
		r, _ := http.NewRequest(c.method, "http://x/", nil)
		r.Header.Set("Content-Type", c.ct)
		r.ContentLength = c.length
		if got := checkBodyShape(r) != nil; got != c.refused {
			t.Errorf("%s %q (%d bytes): refused = %v, want %v", c.method, c.ct, c.length, got, c.refused)
		}
	}
}
