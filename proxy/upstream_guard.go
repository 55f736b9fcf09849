package proxy

import (
	"compress/gzip"
	"errors"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
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

// overrideParams are query parameters frameworks read as the method or
// route to run instead of the request's own: _method (Rails, Laravel,
// Express's method-override), rest_route (WordPress), _url (Phalcon).
var overrideParams = []string{"_method", "rest_route", "_url"}

// overrideParam returns the first query parameter that names an override,
// read as the frameworks read names (isOverrideName).
func overrideParam(rawQuery string) (string, bool) {
	for pair := range strings.SplitSeq(rawQuery, "&") {
		k, _, _ := strings.Cut(pair, "=")
		key, err := url.QueryUnescape(k)
		if err != nil {
			return k, true // not even decodable: refuse rather than guess
		}
		if isOverrideName(key) {
			return key, true
		}
	}
	return "", false
}

// removeNeverForwarded deletes the neverForwarded headers, whatever their
// case and whether they are spelt with '-', '_' or '.': CGI-style servers
// and PHP read all as the same variable (HTTP_X_HTTP_METHOD_OVERRIDE).
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
	// PHP names headers HTTP_..., turning '-', '_', '.' and ' ' alike into '_'.
	return strings.Map(func(r rune) rune {
		if r == '_' || r == '.' || r == ' ' {
			return '-'
		}
		return r
	}, strings.ToLower(name))
}

var (
	errEncodedResponse = errors.New("the upstream sent an encoded body that cannot be scrubbed")
	errPartialResponse = errors.New("the upstream sent a partial response")
)

// readableResponse makes resp's body one the scrubber can read, or refuses
// it: partial content (whose pieces an agent could put together), a
// declared charset that is not ASCII-compatible, and any encoding but one
// layer of gzip, which it decodes. Every Content-Encoding
// value counts, not only the first.
func readableResponse(resp *http.Response) error {
	if resp.StatusCode == http.StatusPartialContent {
		return errPartialResponse
	}
	if !readableResponseCharset(resp.Header) {
		return errResponseCharset // charset.go
	}
	codings := contentCodings(resp.Header)
	switch {
	case len(codings) == 0:
		return nil
	case len(codings) == 1 && (codings[0] == "gzip" || codings[0] == "x-gzip"):
		resp.Body = &gunzipBody{src: resp.Body}
		resp.Header.Del("Content-Encoding")
		resp.Header.Del("Content-Length")
		resp.ContentLength = -1
		resp.Uncompressed = true
		return nil
	default:
		return errEncodedResponse
	}
}

// contentCodings lists every Content-Encoding a message names, from every
// value and every comma-separated item, in lower case, identity left out.
func contentCodings(h http.Header) []string {
	var codings []string
	for _, v := range h.Values("Content-Encoding") {
		for coding := range strings.SplitSeq(v, ",") {
			if c := strings.ToLower(strings.TrimSpace(coding)); c != "" && c != "identity" {
				codings = append(codings, c)
			}
		}
	}
	return codings
}

// gunzipBody decodes a gzip body, starting at its first read: a response
// without a body (HEAD, 204, 304) may still name gzip.
type gunzipBody struct {
	src io.ReadCloser
	zr  *gzip.Reader
}

func (g *gunzipBody) Read(p []byte) (int, error) {
	if g.zr == nil {
		zr, err := gzip.NewReader(g.src)
		if err != nil {
			return 0, err
		}
		g.zr = zr
	}
	return g.zr.Read(p)
}

func (g *gunzipBody) Close() error { return g.src.Close() }

// interimScrubber scrubs the headers of 1xx responses (100 Continue, 103
// Early Hints). ReverseProxy relays those from a trace hook of its own,
// before ModifyResponse ever sees a response. A hook added here, below
// ReverseProxy, runs before ReverseProxy's, so what it relays is scrubbed.
type interimScrubber struct {
	next http.RoundTripper
	ex   *exchange
}

func (t interimScrubber) RoundTrip(req *http.Request) (*http.Response, error) {
	ex := t.ex
	if ex.injectErr != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, ex.injectErr
	}
	trace := &httptrace.ClientTrace{
		Got1xxResponse: func(_ int, header textproto.MIMEHeader) error {
			ex.scrub.Header(http.Header(header))
			ex.sawInterim.Store(true)
			return nil
		},
	}
	return t.next.RoundTrip(req.WithContext(httptrace.WithClientTrace(req.Context(), trace)))
}
