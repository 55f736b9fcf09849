package proxy

import (
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/phantomvault/phantom/internal/reqpath"
	"github.com/phantomvault/phantom/internal/sigv4"
	"github.com/phantomvault/phantom/internal/token"
)

// Headers SDKs put API keys in, besides Authorization.
var keyHeaders = []string{"X-Api-Key", "Api-Key", "X-Goog-Api-Key"}

var (
	errNoToken     = errors.New("no phantom token in the request")
	errBadToken    = errors.New("the request carries a key that is not a valid phantom token")
	errTwoTokens   = errors.New("the request carries two different phantom tokens")
	errBadEncoding = errors.New("a query parameter is not valid percent-encoding")
)

// tokenFinder looks for the phantom token wherever an SDK puts its API key.
type tokenFinder struct {
	headers     []string // canonical names of key headers, Authorization excluded
	queryParams []string
}

func newTokenFinder(extraHeaders, queryParams []string) *tokenFinder {
	f := &tokenFinder{queryParams: queryParams}
	for _, h := range append(append([]string{}, keyHeaders...), extraHeaders...) {
		f.headers = append(f.headers, http.CanonicalHeaderKey(h))
	}
	return f
}

// find returns the request's one phantom token. Every candidate value must
// be the same valid token: a real key sent by mistake is refused, not
// forwarded.
func (f *tokenFinder) find(h http.Header, rawQuery string) (string, error) {
	var candidates []string
	for _, v := range h.Values("Authorization") {
		scheme, rest, hasScheme := strings.Cut(strings.TrimSpace(v), " ")
		rest = strings.TrimSpace(rest)
		switch {
		case !hasScheme:
			candidates = append(candidates, scheme) // a bare key
		case sigv4.IsSigV4(v):
			// An AWS SDK signs with the token as its access key id.
			c, ok := sigv4.FromAuthorization(v)
			if !ok {
				return "", errBadToken
			}
			candidates = append(candidates, c.AccessKeyID)
		case strings.EqualFold(scheme, "Basic"):
			raw, err := base64.StdEncoding.DecodeString(rest)
			if err != nil {
				return "", errBadToken
			}
			// SDKs put the key in either half, the other being empty or a
			// fixed user name such as "api".
			user, pass, _ := strings.Cut(string(raw), ":")
			switch {
			case token.Check(user) == nil:
				candidates = append(candidates, user)
			case token.Check(pass) == nil:
				candidates = append(candidates, pass)
			default:
				candidates = append(candidates, string(raw))
			}
		default: // Bearer, Token, ...
			candidates = append(candidates, rest)
		}
	}
	for _, name := range f.headers {
		for _, v := range h.Values(name) {
			candidates = append(candidates, strings.TrimSpace(v))
		}
	}
	// Query parameters such as "key" are also ordinary data in some APIs:
	// only a value shaped like a phantom token counts as one.
	if rawQuery != "" {
		for pair := range strings.SplitSeq(rawQuery, "&") {
			k, v, _ := strings.Cut(pair, "=")
			key, err1 := url.QueryUnescape(k)
			val, err2 := url.QueryUnescape(v)
			if err1 != nil || err2 != nil {
				return "", errBadEncoding
			}
			if slices.Contains(f.queryParams, key) && token.Check(val) == nil {
				candidates = append(candidates, val)
			}
			if key == "X-Amz-Credential" { // a presigned AWS URL
				id, _, _ := strings.Cut(val, "/")
				candidates = append(candidates, id)
			}
		}
	}

	found := ""
	for _, c := range candidates {
		if token.Check(c) != nil {
			return "", errBadToken
		}
		if found != "" && c != found {
			return "", errTwoTokens
		}
		found = c
	}
	if found == "" {
		return "", errNoToken
	}
	return found, nil
}

// otherTokenIn reports whether the raw query holds a phantom token other
// than tok, in a parameter the finder does not read.
func otherTokenIn(rawQuery, tok string) bool {
	for rest := rawQuery; ; {
		b, e, ok := token.Find(rest)
		if !ok {
			return false
		}
		if !strings.HasSuffix(rest[b:e], tok) && !strings.HasSuffix(tok, rest[b:e]) {
			return true
		}
		rest = rest[e:]
	}
}

// stripToken removes every header and query parameter whose value holds the
// token, wherever the client put it, so the upstream never sees it.
func stripToken(h http.Header, rawQuery, tok string) string {
	for name, values := range h {
		for _, v := range values {
			if strings.Contains(v, tok) || containsBasicToken(name, v, tok) {
				h.Del(name)
				break
			}
		}
	}
	return reqpath.DropQueryParams(rawQuery, func(key, value string) bool { return strings.Contains(value, tok) })
}

func containsBasicToken(name, value, tok string) bool {
	if name != "Authorization" {
		return false
	}
	scheme, rest, _ := strings.Cut(strings.TrimSpace(value), " ")
	if !strings.EqualFold(scheme, "Basic") {
		return false
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(rest))
	return err == nil && strings.Contains(string(raw), tok)
}
