package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"

	"github.com/phantomvault/phantom/internal/origin"
)

// configureUpstreamTLS adds the operator's extra upstream CAs to the system
// roots and pins the addresses the operator named (-upstream-resolve), for
// routes whose upstream has a private CA or a name the proxy's resolver does
// not know. Both come from the proxy's own configuration; nothing an agent
// sends changes where the proxy connects or what it trusts.
func configureUpstreamTLS(t *http.Transport, cfg Config) error {
	if cfg.UpstreamCAFile != "" {
		pem, err := os.ReadFile(cfg.UpstreamCAFile)
		if err != nil {
			return fmt.Errorf("reading the upstream CA file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil || pool == nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return errors.New("the upstream CA file holds no PEM certificate")
		}
		if t.TLSClientConfig == nil {
			t.TLSClientConfig = &tls.Config{}
		}
		t.TLSClientConfig.RootCAs = pool
	}
	if len(cfg.UpstreamResolve) == 0 {
		return nil
	}
	pins, err := parseUpstreamResolve(cfg.UpstreamResolve)
	if err != nil {
		return err
	}
	dial := t.DialContext
	t.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if to, ok := pins[strings.ToLower(addr)]; ok {
			addr = to
		}
		return dial(ctx, network, addr)
	}
	return nil
}

// parseUpstreamResolve reads "host:port=ip:port" entries, as curl's
// --resolve: the name stays what TLS verifies, only the address changes.
func parseUpstreamResolve(entries []string) (map[string]string, error) {
	pins := map[string]string{}
	for _, e := range entries {
		from, to, ok := strings.Cut(e, "=")
		if !ok {
			return nil, fmt.Errorf("-upstream-resolve %q: want host:port=ip:port", e)
		}
		if _, err := origin.Parse(from); err != nil {
			return nil, fmt.Errorf("-upstream-resolve %q: %v", e, err)
		}
		if _, err := netip.ParseAddrPort(to); err != nil {
			return nil, fmt.Errorf("-upstream-resolve %q: the address must be ip:port", e)
		}
		pins[strings.ToLower(from)] = to
	}
	return pins, nil
}
