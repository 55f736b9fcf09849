// Command forward-upstream puts the demo API behind TLS under a name, with a
// CA of its own, as a company's internal API would be: the stand-in upstream
// of the forward-proxy mode in the demo and the bench. phantom-proxy trusts
// the CA through -upstream-ca-file and reaches the name through
// -upstream-resolve; clients reach it only through the forward proxy.
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"log"
	"math/big"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:9443", "address to serve TLS on")
	name := flag.String("name", "demo-api.phantom.test", "the name its certificate carries")
	backend := flag.String("backend", "", "the plain-HTTP API to pass requests to (required)")
	caOut := flag.String("ca-out", "", "where to write the CA certificate (PEM; required)")
	flag.Parse()
	target, err := url.Parse(*backend)
	if err != nil || target.Host == "" || *caOut == "" {
		log.Fatal("forward-upstream: -backend http://host:port and -ca-out are required")
	}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "forward-upstream demo CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(7 * 24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		log.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: *name}, DNSNames: []string{*name},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(7 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey)
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(*caOut, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		log.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true}
	srv := &http.Server{Addr: *listen, Handler: rp,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}}
	log.Printf("forward-upstream: serving %s over TLS on %s, passing to %s", *name, *listen, *backend)
	log.Fatal(srv.ListenAndServeTLS("", ""))
}
