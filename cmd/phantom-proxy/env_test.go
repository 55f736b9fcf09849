package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestEnvPrintsExportsWithoutTheToken(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca"}, NotBefore: time.Now(),
		NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	admin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ca.pem" {
			http.NotFound(w, r)
			return
		}
		w.Write(caPEM)
	}))
	defer admin.Close()
	t.Setenv("PHANTOM_TOKEN", "phm_secret")
	caFile := filepath.Join(t.TempDir(), "it's.pem")
	var out bytes.Buffer
	if err := runEnv([]string{"-forward", "http://127.0.0.1:8081", "-admin", admin.URL, "-ca-file", caFile}, &out); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{
		`export HTTPS_PROXY="http://phantom:${PHANTOM_TOKEN}@127.0.0.1:8081"`,
		`export SSL_CERT_FILE='` + strings.ReplaceAll(caFile, "'", `'\''`) + `'`,
		"REQUESTS_CA_BUNDLE=", "NODE_EXTRA_CA_CERTS=", "GIT_SSL_CAINFO=", "CURL_CA_BUNDLE=", "GIT_HTTP_PROXY_AUTHMETHOD=basic",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
	if strings.Contains(got, "phm_secret") {
		t.Fatal("env printed the token")
	}
	bundle, err := os.ReadFile(caFile)
	if err != nil || !bytes.HasPrefix(bundle, bytes.TrimSpace(caPEM)) {
		t.Fatalf("the bundle does not start with the CA: %v", err)
	}

	// Not a CA, or no forward listener: an error, no exports.
	for _, args := range [][]string{
		{"-admin", admin.URL + "/nothing", "-ca-file", caFile},
		{"-forward", "http://x:y@127.0.0.1:8081", "-admin", admin.URL, "-ca-file", caFile},
		{"-token-var", "A B", "-admin", admin.URL, "-ca-file", caFile},
	} {
		out.Reset()
		if err := runEnv(args, &out); err == nil || out.Len() != 0 {
			t.Errorf("%v: %v, printed %q", args, err, out.String())
		}
	}
}
