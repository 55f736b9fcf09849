package inject

import (
	"net/http"

	"github.com/phantomvault/phantom/proxy/scrub"
)

// Header sends the credential in a header: "Authorization: Bearer <key>"
// (auth_type=bearer) or any header and format (auth_type=header, such as
// "x-api-key: <key>").
type Header struct {
	Name  string
	Value string // the header's value: the credential in its format
}

// Apply sets the header, replacing any value of that name the agent sent.
func (h *Header) Apply(out *http.Request) error {
	out.Header.Set(h.Name, h.Value)
	return nil
}

// Wires is the header's value.
func (h *Header) Wires() []scrub.Wire { return []scrub.Wire{{Value: h.Value}} }
