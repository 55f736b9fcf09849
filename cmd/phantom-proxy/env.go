package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// systemBundles are where Debian, Fedora, Alpine and macOS (Homebrew) keep
// the system's CA bundle.
var systemBundles = []string{
	"/etc/ssl/certs/ca-certificates.crt",
	"/etc/pki/tls/certs/ca-bundle.crt",
	"/etc/ssl/cert.pem",
}

// runEnv is `phantom-proxy env`: it fetches the forward proxy's CA
// certificate from the admin listener, writes a CA bundle an agent's tools
// can trust, and prints the shell exports that send them through the
// forward proxy. The token is referenced by variable name, never printed.
func runEnv(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("phantom-proxy env", flag.ContinueOnError)
	forward := fs.String("forward", envOr("PHANTOM_FORWARD_URL", "http://127.0.0.1:8081"), "the forward-proxy listener, as agents reach it [PHANTOM_FORWARD_URL]")
	admin := fs.String("admin", envOr("PHANTOM_ADMIN_URL", "http://127.0.0.1:9090"), "the admin listener, which serves /ca.pem [PHANTOM_ADMIN_URL]")
	caFile := fs.String("ca-file", "phantom-ca.pem", "where to write the CA bundle the exports point at")
	systemRoots := fs.Bool("system-roots", true, "append the system's CA bundle, so hosts reached without the proxy (NO_PROXY) still verify")
	tokenVar := fs.String("token-var", "PHANTOM_TOKEN", "shell variable holding the phantom token, put in HTTPS_PROXY's credentials; empty for none")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: eval \"$(phantom-proxy env [flags])\"\n\nPrints the exports that make curl, git, Python, Node.js and Go clients use Phantom's forward proxy.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return nil
		}
		return err
	}
	fwd, err := url.Parse(*forward)
	if err != nil || fwd.Scheme != "http" || fwd.Host == "" || fwd.User != nil || (fwd.Path != "" && fwd.Path != "/") {
		return errors.New("-forward must be http://host:port (the token goes in through -token-var)")
	}
	if *tokenVar != "" && !shellName(*tokenVar) {
		return errors.New("-token-var must be a shell variable name")
	}
	ca, err := fetchCA(strings.TrimSuffix(*admin, "/") + "/ca.pem")
	if err != nil {
		return err
	}
	bundle := ca
	if *systemRoots {
		for _, p := range systemBundles {
			if b, err := os.ReadFile(p); err == nil {
				bundle = append(append(bundle, '\n'), b...)
				break
			}
		}
	}
	path, err := filepath.Abs(*caFile)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".phantom-ca-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(bundle); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}

	proxyURL := "http://" + fwd.Host
	if *tokenVar != "" {
		proxyURL = "http://phantom:${" + *tokenVar + "}@" + fwd.Host
	}
	q := shellQuote(path)
	fmt.Fprintf(out, "export HTTPS_PROXY=\"%s\" https_proxy=\"%s\"\n", proxyURL, proxyURL)
	for _, name := range []string{"SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO", "NODE_EXTRA_CA_CERTS"} {
		fmt.Fprintf(out, "export %s=%s\n", name, q)
	}
	// git asks libcurl to wait for a 407 before sending proxy credentials;
	// Phantom takes a tunnel without them, so git must send them at once.
	// Node.js 24 reads HTTPS_PROXY only with NODE_USE_ENV_PROXY.
	fmt.Fprintln(out, "export GIT_HTTP_PROXY_AUTHMETHOD=basic NODE_USE_ENV_PROXY=1")
	return nil
}

// fetchCA gets the CA certificate from the admin listener and checks that it
// is one.
func fetchCA(u string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching the forward-proxy CA: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetching %s: %s (is the proxy running with -forward-listen?)", u, resp.Status)
	}
	block, _ := pem.Decode(body)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s is not a PEM certificate", u)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil || !cert.IsCA {
		return nil, fmt.Errorf("%s is not a CA certificate", u)
	}
	return bytes.TrimSpace(body), nil
}

func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}

func shellName(s string) bool {
	for i, c := range s {
		if !(c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return s != ""
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
