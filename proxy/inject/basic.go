package inject

import (
	"encoding/base64"
	"net/http"

	"github.com/phantomvault/phantom/proxy/scrub"
)

// Basic sends the credential as HTTP Basic auth: Value is "user:password"
// with the credential in it (by default the key as user name, as Stripe
// takes it).
type Basic struct {
	Value string
}

// Apply sets Authorization, replacing any the agent sent.
func (b *Basic) Apply(out *http.Request) error {
	out.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(b.Value)))
	return nil
}

// Wires are the user:password text, and the base64 the
// proxy sends, whose text is masked through the credential's base64 forms
// but whose encodings are not (an upstream that hex-dumps the request it
// received). Padding carries no bit of the value.
func (b *Basic) Wires() []scrub.Wire {
	encoded := base64.RawStdEncoding.EncodeToString([]byte(b.Value))
	return []scrub.Wire{
		{Value: b.Value},
		{Value: encoded, EncodingsOnly: true, MaxLen: (len(b.Value) + 2) / 3 * 4},
	}
}
