package proxy

import (
	"errors"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"slices"
	"strings"
)

// neverForwarded are request headers the proxy removes before forwarding,
// whoever sent them. (ReverseProxy's Rewrite already drops hop-by-hop
// headers, Forwarded and X-Forwarded-For/Host/Proto.)
var neverForwarded = []string{
	// A range lets the agent choose which slice of a response it sees: an
	// echoed key could come back in pieces, each too short to be masked.
	"Range", "If-Range",
	// A charset the scrubber does not expect (UTF-16 interleaves NULs)
	// would carry an echoed key past it; no current client sends this.
	"Accept-Charset",
	// Method overrides make Rails, Express, Laravel or Google-style upstreams
	// run another method than the one resolved.
	"X-Http-Method-Override", "X-Http-Method", "X-Method-Override", "X-Original-Method",
	// Path overrides make IIS, Symfony, nginx or Envoy-fronted upstreams
	// serve another path than the one resolved.
	"X-Original-Url", "X-Rewrite-Url", "X-Original-Uri", "X-Envoy-Original-Path",
	"X-Forwarded-Prefix", "X-Forwarded-Path", "X-Forwarded-Uri",
}

// methodOverrideParam is the query parameter some frameworks read as the
// method to run (Rails, Laravel, Express's method-override).
const methodOverrideParam = "_method"

// removeNeverForwarded deletes the neverForwarded headers, whatever their
// case and whether they are spelt with '-' or '_': CGI-style servers read
// both as the same variable (HTTP_X_HTTP_METHOD_OVERRIDE).
func removeNeverForwarded(h http.Header) {
	for name := range h {
		if slices.Contains(neverForwardedFolded, foldHeaderName(name)) {
			delete(h, name)
		}
	}
}

var neverForwardedFolded = func() []string {
	folded := make([]string, len(neverForwarded))
	for i, name := range neverForwarded {
		folded[i] = foldHeaderName(name)
	}
	return folded
}()

func foldHeaderName(name string) string {
	return strings.ReplaceAll(strings.ToLower(name), "_", "-")
}

var (
	errEncodedResponse = errors.New("the upstream sent an encoded body that cannot be scrubbed")
	errPartialResponse = errors.New("the upstream sent a partial response")
)

// checkResponse refuses responses the scrubber cannot vouch for: a body in
// an encoding it cannot read (every Content-Encoding value counts, not only
// the first), and partial content, whose pieces an agent could put together.
func checkResponse(resp *http.Response) error {
	if resp.StatusCode == http.StatusPartialContent {
		return errPartialResponse
	}
	for _, v := range resp.Header.Values("Content-Encoding") {
		for coding := range strings.SplitSeq(v, ",") {
			if c := strings.TrimSpace(coding); c != "" && !strings.EqualFold(c, "identity") {
				return errEncodedResponse
			}
		}
	}
	return nil
}

// interimScrubber scrubs the headers of 1xx responses (100 Continue, 103
// Early Hints). ReverseProxy relays those from a trace hook of its own,
// before ModifyResponse ever sees a response. A hook added here, below
// ReverseProxy, runs before ReverseProxy's, so what it relays is scrubbed.
type interimScrubber struct{ next http.RoundTripper }

func (t interimScrubber) RoundTrip(req *http.Request) (*http.Response, error) {
	ex := exchangeFrom(req)
	if ex == nil {
		return nil, errors.New("a request reached the upstream transport without a resolved exchange")
	}
	trace := &httptrace.ClientTrace{
		Got1xxResponse: func(_ int, header textproto.MIMEHeader) error {
			ex.scrub.Header(http.Header(header))
			return nil
		},
	}
	return t.next.RoundTrip(req.WithContext(httptrace.WithClientTrace(req.Context(), trace)))
}
