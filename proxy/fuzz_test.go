package proxy

import (
	"io"
	"strings"
	"testing"
)

// FuzzScrubber: split anywhere, the output never holds a form of the secret,
// keeps its length, and equals the input when no form of the secret is in it.
func FuzzScrubber(f *testing.F) {
	f.Add("sk_live_abc123", "error: bad key sk_live_abc123!", 10)
	f.Add("k3y/+=<>&", `{"k":"k3y/+=\u003c\u003e\u0026"}`, 3)
	f.Add("abc", "ababcabc", 4)
	f.Fuzz(func(t *testing.T, secret, body string, split int) {
		if secret == "" || strings.Contains(secret, string(maskByte)) {
			return // a secret of mask bytes would match its own mask
		}
		forms := (&Grant{Credential: secret, AuthFormat: credentialPlaceholder}).secretForms()
		s := newScrubber(forms)
		if split < 0 {
			split = -split
		}
		split %= len(body) + 1
		out, err := io.ReadAll(s.Reader(&chunks{parts: []string{body[:split], body[split:]}}, -1, nil))
		if err != nil {
			t.Fatal(err)
		}
		// With its length known, the body gets a small buffer: same output.
		sized, err := io.ReadAll(s.Reader(&chunks{parts: []string{body[:split], body[split:]}}, int64(len(body)), nil))
		if err != nil || string(sized) != string(out) {
			t.Fatalf("known length gave %q (%v), unknown %q", sized, err, out)
		}
		if len(out) != len(body) {
			t.Fatalf("length %d became %d", len(body), len(out))
		}
		present := false
		for _, form := range forms {
			if form == "" || strings.Contains(form, string(maskByte)) {
				continue
			}
			if strings.Contains(string(out), form) {
				t.Fatalf("output %q still holds %q", out, form)
			}
			present = present || strings.Contains(body, form)
		}
		if !present && string(out) != body {
			t.Fatalf("no secret in %q, yet it became %q", body, out)
		}
	})
}
