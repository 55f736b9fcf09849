package forward

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/phantomvault/phantom/internal/ttlcache"
)

// Leaf certificates the forward proxy presents for a CONNECT host: short
// lived, backdated a little for clients whose clocks lag, and cached for
// half their life so a cached leaf never nears its expiry.
const (
	leafValidity      = 24 * time.Hour
	leafBackdate      = 5 * time.Minute
	leafCacheSize     = 1024
	generatedCAExpiry = 7 * 24 * time.Hour // -forward-ca-generate: for development only
)

// CA signs the leaf certificates of the forward proxy's tunnels. Its
// private key stays in this struct: it is never served, logged or written.
type CA struct {
	cert    *x509.Certificate
	certPEM []byte // what /ca.pem serves
	key     crypto.Signer

	mu     sync.Mutex // one signature per host at a time
	leaves *ttlcache.Cache[string, *tls.Certificate]
}

// NewCA loads the operator's CA (PEM certificate and key files), or
// generates one in memory when generate is set.
func NewCA(certFile, keyFile string, generate bool) (*CA, error) {
	if generate {
		return generateCA()
	}
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("reading the forward-proxy CA certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("reading the forward-proxy CA key: %w", err)
	}
	// X509KeyPair checks that the key belongs to the certificate. Its
	// error never quotes the key.
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("the forward-proxy CA certificate and key: %w", err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("parsing the forward-proxy CA certificate: %w", err)
	}
	if !cert.IsCA || cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("the forward-proxy CA certificate is not a CA (basicConstraints CA:TRUE and keyUsage keyCertSign are needed)")
	}
	if time.Now().After(cert.NotAfter) {
		return nil, errors.New("the forward-proxy CA certificate has expired")
	}
	key, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, errors.New("the forward-proxy CA key cannot sign")
	}
	block := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
	return &CA{cert: cert, certPEM: block, key: key, leaves: ttlcache.New[string, *tls.Certificate](leafCacheSize, leafValidity/2)}, nil
}

// generateCA makes a development CA that lives as long as the process:
// its key is in memory only, so agents must fetch the certificate again
// after each restart.
func generateCA() (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "Phantom forward-proxy development CA " + now.UTC().Format(time.RFC3339)},
		NotBefore:             now.Add(-leafBackdate),
		NotAfter:              now.Add(generatedCAExpiry),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{
		cert:    cert,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		key:     key,
		leaves:  ttlcache.New[string, *tls.Certificate](leafCacheSize, leafValidity/2),
	}, nil
}

// Leaf returns a certificate for host (a lower-case DNS name or a canonical
// IP literal, as ParseTarget returns it), from the cache or signed now.
func (ca *CA) Leaf(host string) (*tls.Certificate, error) {
	if c, ok := ca.leaves.Get(host); ok {
		return c, nil
	}
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if c, ok := ca.leaves.Get(host); ok {
		return c, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	notAfter := now.Add(leafValidity)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: host},
		NotBefore:    now.Add(-leafBackdate),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		tmpl.IPAddresses = append(tmpl.IPAddresses, ip.AsSlice())
	} else {
		tmpl.DNSNames = []string{host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, fmt.Errorf("signing a leaf certificate: %w", err)
	}
	c := &tls.Certificate{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: key}
	ca.leaves.Add(host, c)
	return c, nil
}

func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return n.Add(n, big.NewInt(1))
}

// CertPEM is the CA's certificate, for agents to trust (the admin
// listener's /ca.pem).
func (ca *CA) CertPEM() []byte { return ca.certPEM }
