package inject

import (
	"net/http"
	"net/url"

	"github.com/phantomvault/phantom/internal/reqpath"
	"github.com/phantomvault/phantom/proxy/scrub"
)

// Query sends the credential as a query parameter (Gemini's ?key=).
type Query struct {
	Name  string
	Value string
}

// Apply adds the parameter, dropping any of the same name the agent sent.
func (q *Query) Apply(out *http.Request) error {
	raw := reqpath.DropQueryParams(out.URL.RawQuery, func(key, _ string) bool { return key == q.Name })
	if raw != "" {
		raw += "&"
	}
	out.URL.RawQuery = raw + url.QueryEscape(q.Name) + "=" + url.QueryEscape(q.Value)
	return nil
}

// Wires are the value, and the value query-escaped as the
// proxy sends it (its '%' may be escaped again in a URL inside a
// redirect's query, its '+' by a JSON encoder). Escaping writes a byte in
// at most 3.
func (q *Query) Wires() []scrub.Wire {
	return []scrub.Wire{
		{Value: q.Value},
		{Value: url.QueryEscape(q.Value), MaxLen: 3 * len(q.Value)},
	}
}
