package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"log"
	"net/http"
	"net/url"
	"os"
)

// forwardConfig is the forward-proxy target: the TLS upstream's URL as a
// client names it, reached through phantom-proxy's forward listener with the
// token as proxy credentials, trusting the proxy's CA.
type forwardConfig struct {
	proxy, caFile, target, token string
}

func (f *forwardConfig) flags() {
	flag.StringVar(&f.proxy, "forward-proxy", "", "phantom-proxy's forward listener (http://host:port); with it, the bench adds reverse mode and the tunnel to -forward-target")
	flag.StringVar(&f.caFile, "forward-ca", "", "phantom-proxy's CA certificate (its admin /ca.pem)")
	flag.StringVar(&f.target, "forward-target", "", "the TLS upstream as clients name it (https://name:port), a route of -forward-token")
	flag.StringVar(&f.token, "forward-token", "", "a phantom token for -forward-target's route")
}

func (f *forwardConfig) on() bool { return f.proxy != "" }

// transport goes through the forward proxy, as HTTPS_PROXY would.
func (f *forwardConfig) transport() func(n int) *http.Transport {
	pemBytes, err := os.ReadFile(f.caFile)
	if err != nil {
		log.Fatalf("bench: -forward-ca: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		log.Fatal("bench: -forward-ca holds no certificate")
	}
	pu, err := url.Parse(f.proxy)
	if err != nil || f.target == "" || f.token == "" {
		log.Fatal("bench: -forward-proxy needs -forward-target and -forward-token too")
	}
	pu.User = url.UserPassword("phantom", f.token)
	return func(n int) *http.Transport {
		return &http.Transport{Proxy: http.ProxyURL(pu), TLSClientConfig: &tls.Config{RootCAs: pool},
			MaxIdleConns: n, MaxIdleConnsPerHost: n, MaxConnsPerHost: n, DisableCompression: true}
	}
}
