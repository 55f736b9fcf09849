package proxy

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/phantomvault/phantom/internal/reqpath"
	"github.com/phantomvault/phantom/internal/resolve"
)

// errMethod marks a method the proxy never forwards: CONNECT would make it a
// tunnel, and TRACE would echo the injected credential back.
var errMethod = errors.New("CONNECT and TRACE are not supported")

// checkTarget refuses request targets that could mean one thing to us and
// another to the upstream, and returns the exact path and raw query that
// will be forwarded: the path resolved through Vault is byte for byte the
// path sent upstream.
func checkTarget(r *http.Request) (path, rawQuery string, err error) {
	if resolve.NeverAllowed(r.Method) {
		return "", "", errMethod
	}
	if !resolve.ValidMethod(r.Method) {
		return "", "", errors.New("the method must be an upper-case HTTP method")
	}
	uri := r.RequestURI
	switch {
	case uri == "*":
		return "", "", errors.New("asterisk-form request targets are not supported")
	case !strings.HasPrefix(uri, "/"):
		return "", "", errors.New("only origin-form request targets (/path?query) are supported")
	case strings.Contains(uri, "#"):
		return "", "", errors.New("the request target contains a fragment")
	}
	path, rawQuery, _ = strings.Cut(uri, "?")
	if err := reqpath.Validate(path); err != nil {
		return "", "", errors.New("the request path " + err.Error())
	}
	for i := 0; i < len(rawQuery); i++ {
		if c := rawQuery[i]; c <= ' ' || c >= 0x7f {
			return "", "", errors.New("the query contains a control, space or non-ASCII byte")
		}
	}
	if name, ok := overrideParam(rawQuery); ok {
		return "", "", errors.New("the query parameter " + strconv.Quote(name) + " is refused: some upstreams read it as the method or route to run")
	}
	if r.Header.Get("Upgrade") != "" {
		// An upgraded connection would bypass response scrubbing.
		return "", "", errors.New("protocol upgrades are not supported")
	}
	return path, rawQuery, nil
}
