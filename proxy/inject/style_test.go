package inject

import (
	"encoding/hex"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/proxy/scrub"
)

// injectStyles are the four auth types, with the formats routes use.
var injectStyles = []resolve.Grant{
	{AuthType: resolve.AuthBearer, AuthName: "Authorization", AuthFormat: "Bearer {{credential}}"},
	{AuthType: resolve.AuthHeader, AuthName: "x-api-key", AuthFormat: "{{credential}}"},
	{AuthType: resolve.AuthHeader, AuthName: "Authorization", AuthFormat: "Token {{credential}}"},
	{AuthType: resolve.AuthBasic, AuthName: "Authorization", AuthFormat: "{{credential}}:"},
	{AuthType: resolve.AuthBasic, AuthName: "Authorization", AuthFormat: "user:{{credential}}"},
	{AuthType: resolve.AuthQuery, AuthName: "key", AuthFormat: "{{credential}}"},
}

// holdBefore is the hold the proxy computed for a grant before the scrubber
// took wires (18 is the scrubber's most bytes per byte of a character), with
// the credential's UTF-16 among what is base64-encoded: the wires must give
// the same, for every auth type.
func holdBefore(g *resolve.Grant) int {
	c, v := len(g.Credential), len(g.AuthValue())
	encoded := max(2*c, v) // the credential's UTF-16 is base64-encoded too
	switch g.AuthType {
	case resolve.AuthQuery:
		encoded = max(encoded, 3*v)
	case resolve.AuthBasic:
		encoded = max(encoded, (v+2)/3*4)
	}
	return max(18*max(c, v), 18*(4*encoded/3+1)+2*18) - 1
}

// heldBack is how many bytes s keeps back of a read that does not end in '\n'.
func heldBack(t *testing.T, s *scrub.Scrubber) int {
	body := strings.Repeat("{}", 16<<10)
	n, err := s.Reader(io.NopCloser(strings.NewReader(body)), -1, nil).Read(make([]byte, 64<<10))
	if err != nil {
		t.Fatal(err)
	}
	return len(body) - n
}

func TestWiresHoldBackAsBefore(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	alphabets := []string{"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", "abc+/ =%&\\\"", "é€😀x"}
	for i := range 96 {
		key := make([]rune, 1+rng.IntN(80))
		alphabet := []rune(alphabets[i%len(alphabets)])
		for k := range key {
			key[k] = alphabet[rng.IntN(len(alphabet))]
		}
		g := injectStyles[i%len(injectStyles)]
		g.Credential = string(key)
		if got, want := heldBack(t, scrub.New(g.Credential, styleOf(t, &g).Wires()...)), holdBefore(&g); got != want {
			t.Fatalf("%s %q, key of %d bytes: holds back %d, before %d", g.AuthType, g.AuthFormat, len(g.Credential), got, want)
		}
	}
}

// TestWiresAreWhatIsInjected: what inject sends upstream is one of the
// wires, so an upstream's hex dump of it comes out masked.
func TestWiresAreWhatIsInjected(t *testing.T) {
	for _, g := range injectStyles {
		g.Credential = "k3y/with+odd&chars= é"
		style := styleOf(t, &g)
		out := &http.Request{Header: http.Header{}, URL: &url.URL{}}
		style.Apply(out)
		query, sent := out.URL.RawQuery, out.Header.Get(g.AuthName)
		switch g.AuthType {
		case resolve.AuthQuery:
			sent = strings.TrimPrefix(query, url.QueryEscape(g.AuthName)+"=")
		case resolve.AuthBasic:
			sent = strings.TrimRight(strings.TrimPrefix(sent, "Basic "), "=") // padding carries no bit
		}
		dump := hex.EncodeToString([]byte(sent))
		if got := scrub.New(g.Credential, style.Wires()...).String(dump); got != strings.Repeat("*", len(dump)) {
			t.Errorf("%s %q: the hex of %q came out as %q", g.AuthType, g.AuthFormat, sent, got)
		}
	}
}

func styleOf(t *testing.T, g *resolve.Grant) Style {
	t.Helper()
	style, err := For(g)
	if err != nil {
		t.Fatal(err)
	}
	return style
}

// TestUnknownAuthTypeIsAnError: a style the proxy does not know never
// becomes a request without its credential.
func TestUnknownAuthTypeIsAnError(t *testing.T) {
	if _, err := For(&resolve.Grant{Credential: "k", AuthType: "sigv4", AuthName: "Authorization", AuthFormat: "{{credential}}"}); err == nil {
		t.Fatal("an unknown auth_type gave a style")
	}
}
