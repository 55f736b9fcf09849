package forward

import (
	"encoding/base64"
	"errors"
	"net/http"
	"strings"

	"github.com/phantomvault/phantom/internal/token"
)

// ErrProxyCredentials: Proxy-Authorization holds no valid phantom token,
// or two.
var ErrProxyCredentials = errors.New("the proxy credentials are not one phantom token")

// ProxyCredentials reads a phantom token from Proxy-Authorization: Basic
// with the token as user or password (HTTPS_PROXY=http://x:<token>@host:port),
// or Bearer. No header is no token; a header without a valid token is
// ErrProxyCredentials.
func ProxyCredentials(h http.Header) (string, error) {
	values := h.Values("Proxy-Authorization")
	if len(values) == 0 {
		return "", nil
	}
	if len(values) > 1 {
		return "", ErrProxyCredentials
	}
	scheme, rest, _ := strings.Cut(strings.TrimSpace(values[0]), " ")
	rest = strings.TrimSpace(rest)
	switch {
	case strings.EqualFold(scheme, "Basic"):
		raw, err := base64.StdEncoding.DecodeString(rest)
		if err != nil {
			return "", ErrProxyCredentials
		}
		user, pass, _ := strings.Cut(string(raw), ":")
		userOK, passOK := token.Check(user) == nil, token.Check(pass) == nil
		switch {
		case userOK && passOK && user != pass:
			return "", ErrProxyCredentials
		case userOK:
			return user, nil
		case passOK:
			return pass, nil
		}
	case strings.EqualFold(scheme, "Bearer"):
		if token.Check(rest) == nil {
			return rest, nil
		}
	}
	return "", ErrProxyCredentials
}
