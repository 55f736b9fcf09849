package inject

import (
	"errors"
	"net/http"
	"net/url"

	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/proxy/scrub"
)

// HMAC puts what the engine signed for this one request where the route
// says (auth_type=hmac): the timestamp, the signature, the key id and the
// passphrase. It holds no secret: the engine kept the HMAC key.
type HMAC struct {
	Signed *resolve.HMACSigned
}

func hmacStyle(g *resolve.Grant) (Style, error) {
	if g.HMAC == nil {
		return nil, errors.New("an hmac grant without its signature")
	}
	return &HMAC{Signed: g.HMAC}, nil
}

// Apply sets the query to exactly the one signed (SignedQuery, from the
// query the proxy sent the engine), then the signature parameter last,
// and the headers, replacing any of those names the agent sent.
func (h *HMAC) Apply(out *http.Request) error {
	s := h.Signed
	q := s.SignedQuery(s.Query, s.Timestamp)
	if s.SignatureQuery != "" {
		if q != "" {
			q += "&"
		}
		q += url.QueryEscape(s.SignatureQuery) + "=" + url.QueryEscape(s.Signature)
	}
	out.URL.RawQuery = q
	for name, value := range map[string]string{
		s.SignatureHeader: s.Signature, s.TimestampHeader: s.Timestamp,
		s.KeyIDHeader: s.KeyID, s.PassphraseHeader: s.Passphrase,
	} {
		if name != "" {
			out.Header.Set(name, value)
		}
	}
	return nil
}

// Wires are the key id and the passphrase, which an upstream may echo in
// an error, and the signature, as sent: the first is what the scrubber is
// built around. The timestamp is no secret.
func (h *HMAC) Wires() []scrub.Wire {
	s := h.Signed
	var wires []scrub.Wire
	for _, v := range []string{s.KeyID, s.Passphrase, s.Signature} {
		if v != "" {
			wires = append(wires, scrub.Wire{Value: v})
		}
	}
	if escaped := url.QueryEscape(s.Signature); s.SignatureQuery != "" && escaped != s.Signature {
		wires = append(wires, scrub.Wire{Value: escaped, MaxLen: 3 * len(s.Signature)})
	}
	return wires
}
