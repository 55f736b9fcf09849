// Package origin is the one form of a forward-proxy tunnel's destination
// that phantom-proxy and the engine compare: "host:port", the host a
// lower-case DNS name or a canonical IP literal (IPv6 in brackets), the port
// always explicit. The proxy parses a CONNECT target into it; the engine
// derives it from a route's upstream and checks the proxy's string against
// it, byte for byte. Only https origins are tunnelled.
package origin

import (
	"errors"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Origin is where a tunnel leads.
type Origin struct{ Host, Port string }

// String is the canonical form, the one the proxy sends the engine.
func (o Origin) String() string { return net.JoinHostPort(o.Host, o.Port) }

// Parse reads host:port strictly (a CONNECT target): forms a resolver might
// read as another address ("127.1", "0x7f.1", IPv4-mapped IPv6, zones) and
// names with odd bytes are refused rather than guessed at. Upper-case
// letters in a name are folded.
func Parse(authority string) (Origin, error) {
	host, port, err := net.SplitHostPort(authority)
	if err != nil {
		return Origin{}, errors.New("the CONNECT target must be host:port")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 || port != strconv.Itoa(n) {
		return Origin{}, errors.New("the CONNECT port must be a number from 1 to 65535")
	}
	if strings.Contains(host, ":") || strings.HasPrefix(authority, "[") {
		addr, err := netip.ParseAddr(host)
		if err != nil || !addr.Is6() || addr.Zone() != "" || addr.Is4In6() || addr.String() != host || !strings.HasPrefix(authority, "[") {
			return Origin{}, errors.New("the CONNECT host is not a canonical IPv6 address")
		}
		return Origin{Host: host, Port: port}, nil
	}
	if addr, err := netip.ParseAddr(host); err == nil {
		if addr.String() != host {
			return Origin{}, errors.New("the CONNECT host is not a canonical IPv4 address")
		}
		return Origin{Host: host, Port: port}, nil
	}
	// ASCII first: strings.ToLower would fold the Kelvin sign into 'k'.
	if strings.IndexFunc(host, func(r rune) bool { return r >= utf8.RuneSelf }) >= 0 {
		return Origin{}, errors.New("the CONNECT host is not a valid DNS name (ASCII only: use the xn-- form)")
	}
	host = strings.ToLower(host)
	if !validDNSName(host) {
		return Origin{}, errors.New("the CONNECT host is not a valid DNS name")
	}
	return Origin{Host: host, Port: port}, nil
}

// ParseCanonical is Parse for a string that must already be canonical, as
// the engine receives it from the proxy.
func ParseCanonical(s string) (Origin, error) {
	o, err := Parse(s)
	if err == nil && o.String() != s {
		return Origin{}, errors.New("the origin is not in canonical form (lower-case host:port)")
	}
	return o, err
}

// ErrBasePath is OfURL's error for an upstream with a path: in a tunnel the
// client sends the origin's own paths, so a base path would make the path
// forwarded differ from the path resolved.
var ErrBasePath = errors.New("the upstream has a base path")

// ErrNotHTTPS is OfURL's error for an upstream that is not https.
var ErrNotHTTPS = errors.New("the upstream is not https")

// OfURL is the origin of a route's upstream u (port 443 when none is
// given). With ErrBasePath the origin is returned too; with any other
// error u is no tunnel's.
func OfURL(u *url.URL) (Origin, error) {
	if u.Scheme != "https" {
		return Origin{}, ErrNotHTTPS
	}
	port := u.Port()
	if port == "" {
		port = "443"
	}
	o, err := Parse(net.JoinHostPort(u.Hostname(), port))
	if err != nil {
		return Origin{}, err
	}
	if p := u.EscapedPath(); p != "" && p != "/" {
		return o, ErrBasePath
	}
	return o, nil
}

// OfUpstream is the tunnel origin of a route's upstream URL, if it has one:
// https and no base path.
func OfUpstream(upstream string) (Origin, bool) {
	u, err := url.Parse(upstream)
	if err != nil {
		return Origin{}, false
	}
	o, err := OfURL(u)
	return o, err == nil
}

// validDNSName accepts LDH names without a trailing dot whose last label is
// not numeric (resolvers read "127.1" or "0x7f.1" as IPv4 addresses).
func validDNSName(name string) bool {
	if len(name) == 0 || len(name) > 253 {
		return false
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if len(l) == 0 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	last := labels[len(labels)-1]
	if strings.HasPrefix(last, "0x") || strings.Trim(last, "0123456789") == "" {
		return false
	}
	return true
}
