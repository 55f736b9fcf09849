package harness

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// UpstreamCA is a private CA for TLS stand-in upstreams, as a company's
// internal APIs have: the proxy trusts it through -upstream-ca-file.
type UpstreamCA struct {
	File string // PEM certificate
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// NewUpstreamCA makes a CA and writes its certificate to a file.
func NewUpstreamCA(t testing.TB) *UpstreamCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "stand-in upstream CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	file := filepath.Join(t.TempDir(), "upstream-ca.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return &UpstreamCA{File: file, cert: cert, key: key}
}

// KeyFile writes the CA's private key (PKCS#8 PEM, mode 0600), for a
// proxy given this CA as its forward-proxy CA.
func (ca *UpstreamCA) KeyFile(t testing.TB) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "ca.key")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// issue signs a server certificate for name.
func (ca *UpstreamCA) issue(t testing.TB, name string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// TLSUpstream is a stand-in API served over TLS under a name that resolves
// nowhere but in the proxy (-upstream-resolve): clients must reach it
// through the forward proxy, and Go's clients, which never proxy loopback
// hosts, do.
type TLSUpstream struct {
	Name  string // e.g. api-a.phantom.test
	Addr  string // 127.0.0.1:port, where it listens
	Port  string
	URL   string // https://name:port
	conns atomic.Int64
	reqs  atomic.Int64
}

// Connections is how many TCP connections it accepted; Requests how many
// requests it served.
func (u *TLSUpstream) Connections() int64 { return u.conns.Load() }
func (u *TLSUpstream) Requests() int64    { return u.reqs.Load() }

// Resolve is its -upstream-resolve entry.
func (u *TLSUpstream) Resolve() string { return u.Name + ":" + u.Port + "=" + u.Addr }

// StartTLSUpstream serves h over TLS as name, with a certificate from ca.
func StartTLSUpstream(t testing.TB, ca *UpstreamCA, name string, h http.Handler) *TLSUpstream {
	t.Helper()
	ln := Listen(t)
	u := &TLSUpstream{Name: name, Addr: ln.Addr().String()}
	_, u.Port, _ = net.SplitHostPort(u.Addr)
	u.URL = "https://" + name + ":" + u.Port
	cert := ca.issue(t, name)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			u.reqs.Add(1)
			h.ServeHTTP(w, r)
		}),
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}},
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				u.conns.Add(1)
			}
		},
	}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	return u
}

// ForwardProxy is phantom-proxy with its forward-proxy listener on, a CA
// generated at start (unless extra names -forward-ca-cert), trusting ca for
// upstreams and pinning ups' names.
type ForwardProxy struct {
	*Proxy
	Forward string // http://127.0.0.1:port, for HTTPS_PROXY
	CAFile  string // the proxy's CA certificate, fetched from /ca.pem
}

// StartForwardProxy starts it and fetches its CA certificate.
func StartForwardProxy(t testing.TB, v *Vault, ca *UpstreamCA, ups []*TLSUpstream, extra ...string) *ForwardProxy {
	t.Helper()
	fwd := "127.0.0.1:" + strconv.Itoa(FreePort(t))
	var pins []string
	for _, u := range ups {
		pins = append(pins, u.Resolve())
	}
	args := []string{"-forward-listen=" + fwd, "-upstream-ca-file=" + ca.File, "-upstream-resolve=" + strings.Join(pins, ",")}
	if !strings.Contains(strings.Join(extra, " "), "-forward-ca-cert=") {
		args = append(args, "-forward-ca-generate")
	}
	args = append(args, extra...)
	p := StartProxy(t, v, args...)
	f := &ForwardProxy{Proxy: p, Forward: "http://" + fwd, CAFile: filepath.Join(t.TempDir(), "phantom-ca.pem")}
	resp, err := pollClient.Get(p.Admin + "/ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	pemBytes, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.HasPrefix(string(pemBytes), "-----BEGIN CERTIFICATE-----") || strings.Contains(string(pemBytes), "PRIVATE") {
		t.Fatalf("/ca.pem: %d %q", resp.StatusCode, pemBytes)
	}
	if err := os.WriteFile(f.CAFile, pemBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// ClientEnv is the environment of a client process that knows only the
// proxy: HTTPS_PROXY (with token as proxy credentials unless empty), the CA
// variables `phantom-proxy env` prints, and no NO_PROXY, keys or base URLs
// inherited from the test's environment.
func (f *ForwardProxy) ClientEnv(t testing.TB, token string) []string {
	t.Helper()
	proxyURL := f.Forward
	if token != "" {
		proxyURL = "http://phantom:" + token + "@" + strings.TrimPrefix(f.Forward, "http://")
	}
	env := []string{"HOME=" + t.TempDir(), "PATH=" + os.Getenv("PATH"), "LANG=C.UTF-8",
		"HTTPS_PROXY=" + proxyURL, "https_proxy=" + proxyURL,
		"SSL_CERT_FILE=" + f.CAFile, "REQUESTS_CA_BUNDLE=" + f.CAFile, "CURL_CA_BUNDLE=" + f.CAFile,
		"GIT_SSL_CAINFO=" + f.CAFile, "NODE_EXTRA_CA_CERTS=" + f.CAFile, "GIT_HTTP_PROXY_AUTHMETHOD=basic"}
	return env
}

// Client is an external client program, found where a Debian machine keeps
// it: missing, it fails the test under CI=true and skips it elsewhere.
func Client(t testing.TB, path string, check ...string) string {
	t.Helper()
	if _, err := os.Stat(path); err == nil {
		if len(check) == 0 {
			return path
		}
		if out, err := exec.Command(path, check...).CombinedOutput(); err == nil {
			return path
		} else {
			missing(t, path+" "+strings.Join(check, " ")+": "+strings.TrimSpace(string(out)))
		}
		return ""
	}
	missing(t, path+" is not installed")
	return ""
}

func missing(t testing.TB, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("a client this test needs is missing: %s", why)
	}
	t.Skipf("a client this test needs is missing: %s", why)
}
