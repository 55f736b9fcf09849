package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/phantomvault/phantom/e2e/harness"
	"github.com/phantomvault/phantom/internal/sigv4"
	"github.com/phantomvault/phantom/internal/sigv4/sigv4test"
)

const (
	awsKeyID   = "AKIAPHANTOMEXAMPLE01"
	awsSecret  = "phantomSECRETaccessKEY/never+leaves/VAULT01"
	awsSession = "IQoJb3JpZ2luX2VjEphantomSESSIONtoken"
)

// TestAWSSecretStaysInVault: through the real stack, an aws_sigv4 route's
// requests reach an upstream that verifies them with the real secret, and
// the secret is nowhere but Vault: not in any byte the agent receives, the
// proxy's log, the audit file, a resolve answer, or the live proxy's
// memory. The day's signing key, which the proxy does hold, is found in
// the answer and in its memory: the scans look where it would be.
func TestAWSSecretStaysInVault(t *testing.T) {
	v := harness.StartPersistentVault(t)
	up := harness.StartUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := sigv4test.Verify(r, body, awsKeyID, awsSecret, "s3"); err != nil {
			http.Error(w, "SignatureDoesNotMatch: "+err.Error(), http.StatusForbidden)
			return
		}
		// A hostile upstream echoes every credential it was sent.
		w.Header().Set("X-Echo", r.Header.Get("Authorization")+" "+r.Header.Get("X-Amz-Security-Token"))
		fmt.Fprintf(w, "<Owner>%s</Owner><Auth>%s</Auth><Token>%s</Token>", awsKeyID, r.Header.Get("Authorization"), r.Header.Get("X-Amz-Security-Token"))
	}))
	v.MustCLI(t, "write", "phantom/routes/s3", "upstream="+up.URL, "auth_type=aws_sigv4", "access_key_id="+awsKeyID,
		"secret_access_key="+awsSecret, "session_token="+awsSession, "region=us-east-1", "service=s3",
		"allowed_paths=/bucket/**", "allowed_methods=GET,PUT")
	p := harness.StartProxy(t, v)
	tok, _ := v.Mint(t, "s3", "ttl=1h")
	readOnly, _ := v.Mint(t, "s3", "ttl=1h", "allowed_actions=s3:GetObject")

	var seen bytes.Buffer // every byte an agent received
	send := func(req *http.Request, want int) {
		t.Helper()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		resp.Header.Write(&seen)
		seen.Write(body)
		if resp.StatusCode != want {
			t.Fatalf("%s %s: %d %s", req.Method, req.URL, resp.StatusCode, body)
		}
	}
	send(agentRequest(t, p.URL, tok, "PUT", "/bucket/report.txt", "hello"), 200)
	send(agentRequest(t, p.URL, tok, "GET", "/bucket/report.txt?x-id=GetObject", ""), 200)
	now := time.Now().UTC()
	presigned, _ := http.NewRequest("GET", p.URL+"/bucket/report.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential="+tok+
		"%2F"+now.Format(sigv4.DateFormat)+"%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date="+now.Format(sigv4.TimeFormat)+
		"&X-Amz-Expires=300&X-Amz-SignedHeaders=host&X-Amz-Signature="+strings.Repeat("0", 64), nil)
	send(presigned, 200)
	chunked := agentRequest(t, p.URL, tok, "PUT", "/bucket/big.bin", "")
	zero := strings.Repeat("0", 64)
	body := "400;chunk-signature=" + zero + "\r\n" + strings.Repeat("z", 1024) + "\r\n0;chunk-signature=" + zero + "\r\n\r\n"
	chunked.Body, chunked.ContentLength = io.NopCloser(strings.NewReader(body)), int64(len(body))
	chunked.Header.Set("X-Amz-Content-Sha256", sigv4.StreamingSigned)
	send(chunked, 200)
	// A token that may only read cannot write, and nothing reaches the upstream.
	before := up.Count()
	send(agentRequest(t, p.URL, readOnly, "PUT", "/bucket/report.txt", "overwrite"), 403)
	send(agentRequest(t, p.URL, readOnly, "GET", "/bucket/report.txt", ""), 200)
	if up.Count() != before+1 {
		t.Fatal("a refused PUT reached the upstream")
	}

	// What the proxy holds: the signing key of the day, as the engine
	// answers the proxy's own AppRole.
	proxyToken := v.AppRoleLogin(t, v.RoleIDFile, v.SecretIDFile)
	code, answer := v.API(t, http.MethodPatch, "phantom/resolve", proxyToken, map[string]any{"token": tok, "method": "GET", "path": "/bucket/report.txt"})
	data, _ := answer["data"].(map[string]any)
	signingKey, _ := data["credential"].(string)
	if code != 200 || len(signingKey) != 64 {
		t.Fatalf("resolve: %d %v", code, answer)
	}
	rawKey, _ := hex.DecodeString(signingKey)

	audit, err := os.ReadFile(p.AuditFile)
	if err != nil {
		t.Fatal(err)
	}
	secretForms := [][]byte{[]byte(awsSecret), []byte(hex.EncodeToString([]byte(awsSecret))), []byte(base64.StdEncoding.EncodeToString([]byte(awsSecret))),
		[]byte("AWS4" + awsSecret)}
	for name, text := range map[string]string{
		"what the agent received": seen.String(), "the proxy's log": p.Out.String(), "the audit file": string(audit),
		"the resolve answer": fmt.Sprint(answer),
	} {
		for _, form := range secretForms {
			if strings.Contains(text, string(form)) {
				t.Errorf("%s holds the secret access key (%.12s...)", name, form)
			}
		}
	}
	for _, echoed := range []string{awsKeyID, awsSession, signingKey} {
		if strings.Contains(seen.String(), echoed) {
			t.Errorf("what the agent received holds %.8s... unmasked", echoed)
		}
	}
	found := harness.MemoryContains(t, p.PID(), append(secretForms, []byte(signingKey), rawKey)...)
	for i := range secretForms {
		if found[i] {
			t.Errorf("the proxy's memory holds the secret access key (form %d)", i)
		}
	}
	if !found[len(secretForms)] && !found[len(secretForms)+1] {
		t.Error("the proxy's memory does not hold the signing key it signs with: the scan reads the wrong memory")
	}
}

// agentRequest is a request as an AWS SDK signs it for the proxy: the
// phantom token as its access key id, a secret of the agent's own.
func agentRequest(t *testing.T, base, tok, method, target, body string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, base+target, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	day := now.Format(sigv4.DateFormat)
	agent := &sigv4.Signer{Key: sigv4.SigningKey("any-secret", day, "us-east-1", "s3"), AccessKeyID: tok, Date: day, Region: "us-east-1", Service: "s3"}
	req.Header.Set("X-Amz-Content-Sha256", sigv4.HexSHA256([]byte(body)))
	if _, err := agent.SignRequest(req, now.Format(sigv4.TimeFormat), sigv4.HexSHA256([]byte(body)), "", false); err != nil {
		t.Fatal(err)
	}
	return req
}
