package proxy

import (
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/proxy/inject"
)

// TestGrantInject: each auth type puts the credential where its route says,
// the static headers are set, and a query parameter of the credential's
// name sent by the client is replaced, not repeated.
func TestGrantInject(t *testing.T) {
	const key = "sk_live_Inject0123"
	for _, tc := range []struct {
		authType, name, format string
		wantHeader, wantValue  string
		wantQuery              string
	}{
		{resolve.AuthBearer, "Authorization", "Bearer " + resolve.Placeholder, "Authorization", "Bearer " + key, "alt=json&key=attacker"},
		{resolve.AuthHeader, "x-api-key", resolve.Placeholder, "X-Api-Key", key, "alt=json&key=attacker"},
		{resolve.AuthBasic, "Authorization", resolve.Placeholder + ":", "Authorization", "Basic " + base64.StdEncoding.EncodeToString([]byte(key+":")), "alt=json&key=attacker"},
		{resolve.AuthQuery, "key", resolve.Placeholder, "", "", "alt=json&key=" + key},
	} {
		g := &Grant{Credential: key, AuthType: tc.authType, AuthName: tc.name, AuthFormat: tc.format, Headers: map[string]string{"anthropic-version": "2023-06-01"}}
		style, err := inject.For((*resolve.Grant)(g))
		if err != nil {
			t.Fatal(err)
		}
		out := httptest.NewRequest(http.MethodGet, "/x?alt=json&key=attacker", nil)
		out.Header = http.Header{}
		injectCredential(out, style, g.Headers)
		h, q := out.Header, out.URL.RawQuery
		if tc.wantHeader != "" && h.Get(tc.wantHeader) != tc.wantValue {
			t.Errorf("%s: %s = %q, want %q", tc.authType, tc.wantHeader, h.Get(tc.wantHeader), tc.wantValue)
		}
		if q != tc.wantQuery || h.Get("Anthropic-Version") != "2023-06-01" {
			t.Errorf("%s: query %q headers %v", tc.authType, q, h)
		}
		if tc.authType == resolve.AuthQuery && len(h) != 1 {
			t.Errorf("query injection set headers: %v", h)
		}
	}
}
