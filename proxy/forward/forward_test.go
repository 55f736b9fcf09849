package forward

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/phantomvault/phantom/internal/token"
)

func mintToken(t *testing.T) string {
	t.Helper()
	tok, err := token.New(rand.Reader, token.DefaultPrefix)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestParseConnectTarget(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want "" means refused
	}{
		{"api.example.com:443", "api.example.com:443"},
		{"API.Example.COM:8443", "api.example.com:8443"},
		{"127.0.0.1:443", "127.0.0.1:443"},
		{"[::1]:443", "[::1]:443"},
		{"api.example.com", ""},
		{"api.example.com:", ""},
		{"api.example.com:0", ""},
		{"api.example.com:65536", ""},
		{"api.example.com:0443", ""},
		{"api.example.com:+443", ""},
		{"api.example.com.:443", ""},
		{"127.1:443", ""},
		{"0x7f.0.0.1:443", ""},
		{"0x7f000001:443", ""},
		{"2130706433:443", ""},
		{"127.000.000.001:443", ""},
		{"[::ffff:127.0.0.1]:443", ""},
		{"[fe80::1%eth0]:443", ""},
		{"[0:0::1]:443", ""},
		{"a_b.example.com:443", ""},
		{"-a.example.com:443", ""},
		{"a..example.com:443", ""},
		{"exa%6dple.com:443", ""},
		{"user@example.com:443", ""},
		{"example.com:443/x", ""},
		{"\u212aelvin.example:443", ""}, // the Kelvin sign, which ToLower folds into 'k'
		{"b\u00fccher.example:443", ""},
	} {
		o, err := ParseTarget(tc.in)
		got := ""
		if err == nil {
			got = o.String()
		}
		if got != tc.want {
			t.Errorf("ParseTarget(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestProxyCredentials(t *testing.T) {
	tok, other := mintToken(t), mintToken(t)
	basic := func(s string) string { return "Basic " + base64.StdEncoding.EncodeToString([]byte(s)) }
	for _, tc := range []struct {
		name, header, want string
		bad                bool
	}{
		{"none", "", "", false},
		{"password", basic("x:" + tok), tok, false},
		{"user", basic(tok + ":"), tok, false},
		{"both the same", basic(tok + ":" + tok), tok, false},
		{"bearer", "Bearer " + tok, tok, false},
		{"two tokens", basic(tok + ":" + other), "", true},
		{"a real key", basic("x:sk_live_123"), "", true},
		{"garbage", "Basic !!!", "", true},
	} {
		h := http.Header{}
		if tc.header != "" {
			h.Set("Proxy-Authorization", tc.header)
		}
		got, err := ProxyCredentials(h)
		if got != tc.want || (err != nil) != tc.bad {
			t.Errorf("%s: got a token %v, error %v", tc.name, got == tc.want, err)
		}
	}
}

func TestCA(t *testing.T) {
	ca, err := NewCA("", "", true)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Leaf("api.example.com")
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(leaf.Certificate[0])
	roots := x509.NewCertPool()
	roots.AddCert(ca.cert)
	if _, err := cert.Verify(x509.VerifyOptions{DNSName: "api.example.com", Roots: roots}); err != nil {
		t.Fatal(err)
	}
	if life := cert.NotAfter.Sub(cert.NotBefore); life > leafValidity+leafBackdate || cert.PublicKeyAlgorithm != x509.ECDSA {
		t.Fatalf("leaf lives %v, key %v", life, cert.PublicKeyAlgorithm)
	}
	if again, _ := ca.Leaf("api.example.com"); again != leaf {
		t.Fatal("the leaf was not cached")
	}
	ipLeaf, _ := ca.Leaf("127.0.0.1")
	ipCert, _ := x509.ParseCertificate(ipLeaf.Certificate[0])
	if _, err := ipCert.Verify(x509.VerifyOptions{DNSName: "127.0.0.1", Roots: roots}); err != nil {
		t.Fatal(err)
	}

	// Files: a CA and its key load; a key of another certificate, or a
	// certificate that is no CA, does not.
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, 0o600)
		return p
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(ca.key)
	certFile := write("ca.pem", ca.certPEM)
	keyFile := write("ca.key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	if _, err := NewCA(certFile, keyFile, false); err != nil {
		t.Fatal(err)
	}
	other, _ := NewCA("", "", true)
	otherKey, _ := x509.MarshalPKCS8PrivateKey(other.key)
	if _, err := NewCA(certFile, write("other.key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: otherKey})), false); err == nil {
		t.Fatal("a key of another CA was accepted")
	}
	leafKey, _ := x509.MarshalPKCS8PrivateKey(leaf.PrivateKey)
	leafCert := write("leaf.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Certificate[0]}))
	if _, err := NewCA(leafCert, write("leaf.key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: leafKey})), false); err == nil ||
		strings.Contains(err.Error(), "PRIVATE") {
		t.Fatalf("a leaf certificate as CA: %v", err)
	}
}
