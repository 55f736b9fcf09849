package origin

import (
	"errors"
	"net/url"
	"testing"
)

func TestParseCanonical(t *testing.T) {
	for in, ok := range map[string]bool{
		"api.example.com:443": true, "127.0.0.1:8443": true, "[::1]:443": true,
		"API.example.com:443": false, "api.example.com": false, "api.example.com:0443": false,
		"127.1:443": false, "[0:0::1]:443": false, "api.example.com.:443": false, "": false,
	} {
		if _, err := ParseCanonical(in); (err == nil) != ok {
			t.Errorf("ParseCanonical(%q): %v, want ok=%v", in, err, ok)
		}
	}
}

func TestOfUpstream(t *testing.T) {
	for in, want := range map[string]string{
		"https://API.Example.com":      "api.example.com:443",
		"https://api.example.com/":     "api.example.com:443",
		"https://api.example.com:8443": "api.example.com:8443",
		"https://[::1]:8443":           "[::1]:8443",
		"https://127.0.0.1":            "127.0.0.1:443",
		"https://api.example.com/v1":   "", // a base path
		"http://127.0.0.1:8080":        "", // not https
		"https://api.example.com:0443": "",
		"https://api.example.com.":     "",
	} {
		o, ok := OfUpstream(in)
		got := ""
		if ok {
			got = o.String()
		}
		if got != want {
			t.Errorf("OfUpstream(%q) = %q, want %q", in, got, want)
		}
	}
	u, _ := url.Parse("https://api.example.com/v1")
	if o, err := OfURL(u); !errors.Is(err, ErrBasePath) || o.String() != "api.example.com:443" {
		t.Errorf("OfURL with a base path: %v %v", o, err)
	}
}
