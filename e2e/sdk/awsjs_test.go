package sdk

// The AWS SDK for JavaScript v3 (@aws-sdk/client-s3, pinned in
// e2e/node/package-lock.json, installed by .ci/run's `npm ci`) through an
// aws_sigv4 route: e2e/node/aws.mjs, configured by its environment only.

import (
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// needTool fails the test under CI=true and skips it elsewhere: CI must
// never pass by skipping.
func needTool(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("test cannot run: %v", err)
	}
	t.Skipf("test skipped: %v", err)
}

// nodeDir is e2e/node with node and the pinned AWS SDK installed.
func nodeDir(t *testing.T) string {
	t.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "node")) // go test runs in e2e/sdk
	if err != nil {
		t.Fatal(err)
	}
	if _, err := exec.LookPath("node"); err != nil {
		needTool(t, fmt.Errorf("node is not installed: %v", err))
	}
	for _, pkg := range []string{"@aws-sdk/client-s3", "@aws-sdk/s3-request-presigner"} {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", pkg, "package.json")); err != nil {
			needTool(t, fmt.Errorf("the npm package %s is not installed (cd e2e/node && npm ci): %v", pkg, err))
		}
	}
	return dir
}

// awsJSResult is what aws.mjs prints.
type awsJSResult struct {
	BigSHA256, WantSHA256 string
	HeadLength            int64
	Keys                  []string
	PresignedStatus       int
	PresignedURLHost      string
	Presigned             string
	Error                 string
	Status, Attempts      int
	Seen                  []string
}

// runAWSJS runs one scenario of aws.mjs as an agent: the phantom token (or
// any key) as AWS_ACCESS_KEY_ID, a junk secret, the region and the S3
// endpoint, nothing from the test's environment or home directory.
func runAWSJS(t *testing.T, dir, scenario, endpoint, akid, secret string) (awsJSResult, string) {
	t.Helper()
	home := t.TempDir()
	cmd := exec.Command("node", "aws.mjs", scenario)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home, "LANG=C.UTF-8", "NO_PROXY=*",
		"AWS_ACCESS_KEY_ID=" + akid, "AWS_SECRET_ACCESS_KEY=" + secret, "AWS_REGION=" + awsRegion,
		"AWS_ENDPOINT_URL_S3=" + endpoint, "AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=" + filepath.Join(home, "none"), "AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(home, "none")}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node aws.mjs %s: %v\n%s\n%s", scenario, err, out, stderr.String())
	}
	var res awsJSResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("node aws.mjs %s printed %q: %v\n%s", scenario, out, err, stderr.String())
	}
	return res, string(out)
}

// checkJSS3 checks the s3 scenario's result and the forms its uploads
// reached the upstream in: a Buffer as a signed payload hash with a CRC32
// header, a stream of known length as STREAMING-UNSIGNED-PAYLOAD-TRAILER
// (the JS SDK uses aws-chunked with a trailing checksum over plain http,
// where aws-sdk-go-v2 refuses an unseekable body).
func checkJSS3(t *testing.T, res awsJSResult, raw string, up *awsUpstream, tok string) {
	t.Helper()
	if res.BigSHA256 == "" || res.BigSHA256 != res.WantSHA256 {
		t.Errorf("GetObject returned sha256 %s, want %s", res.BigSHA256, res.WantSHA256)
	}
	sort.Strings(res.Keys)
	if strings.Join(res.Keys, ",") != "notes/big.bin,notes/small.txt" || res.HeadLength != int64(len("hello from the JS SDK")) {
		t.Errorf("ListObjectsV2 keys %v, HeadObject length %d", res.Keys, res.HeadLength)
	}
	if res.PresignedStatus != 200 || res.Presigned != "hello from the JS SDK" {
		t.Errorf("the presigned GET: %d %q", res.PresignedStatus, res.Presigned)
	}
	if f := findSecret(raw); f != "" {
		t.Errorf("the JS SDK saw a form of the real secret in a response")
	}
	var puts []string
	for _, a := range checkArrivals(t, up, tok, 6) {
		if a.Method == "PUT" && a.Verified != nil {
			form := a.Verified.PayloadForm
			if len(form) == 64 {
				form = "sha256"
			}
			puts = append(puts, form+"+"+strings.SplitN(a.Verified.Checksum, ":", 2)[0])
		}
	}
	if strings.Join(puts, " ") != "sha256+crc32 "+payloadStreamUnsignTrlr+"+crc32" {
		t.Errorf("the uploads reached the upstream as %v", puts)
	}
}

// TestStandInAcceptsTheJSSDK: the stand-in verifies what the JS SDK signs
// with the real key (no Phantom in between).
func TestStandInAcceptsTheJSSDK(t *testing.T) {
	dir := nodeDir(t)
	up := newAWSUpstream(realAWS, awsRegion)
	srv := httptest.NewServer(up)
	t.Cleanup(srv.Close)
	res, raw := runAWSJS(t, dir, "s3", srv.URL, awsAccessKeyID, awsSecretKey)
	checkJSS3(t, res, strings.ReplaceAll(raw, awsSecretKey, ""), up, "phm_")
	bad := newAWSUpstream(realAWS, awsRegion)
	badSrv := httptest.NewServer(bad)
	t.Cleanup(badSrv.Close)
	res, _ = runAWSJS(t, dir, "s3-put-refused", badSrv.URL, awsAccessKeyID, "a-wrong-secret")
	if res.Status != 403 || res.Error != "SignatureDoesNotMatch" {
		t.Fatalf("a wrong secret: %+v", res)
	}
}

// TestAWSJSSDK: PutObject (a Buffer and a stream), GetObject, HeadObject,
// ListObjectsV2 and a presigned GET from the JS SDK through the proxy; and
// a route that allows only s3:GetObject refuses its PutObject with a 403
// that the SDK does not retry and the upstream never sees.
func TestAWSJSSDK(t *testing.T) {
	dir := nodeDir(t)
	st := startAWSStack(t)
	tok, _ := st.v.Mint(t, "s3", "ttl=1h")
	res, raw := runAWSJS(t, dir, "s3", st.p.URL, tok, agentSecret)
	checkJSS3(t, res, raw, st.up, tok)
	if res.PresignedURLHost != strings.TrimPrefix(st.p.URL, "http://") {
		t.Errorf("the presigned URL went to %s, not the proxy", res.PresignedURLHost)
	}

	writeAWSRoute(t, st.v, "s3-read", st.upstream.URL, "s3", "allowed_paths=/**", "allowed_methods=GET,PUT,HEAD", "allowed_actions=s3:GetObject")
	readTok, _ := st.v.Mint(t, "s3-read", "ttl=1h")
	before := len(st.up.Arrivals())
	res, raw = runAWSJS(t, dir, "s3-put-refused", st.p.URL, readTok, agentSecret)
	if res.Status != 403 || res.Attempts != 1 {
		t.Errorf("PutObject with only s3:GetObject allowed: %+v, want 403 after 1 attempt", res)
	}
	if n := len(st.up.Arrivals()) - before; n != 0 {
		t.Errorf("the upstream received %d refused requests", n)
	}
	if f := findSecret(raw); f != "" {
		t.Errorf("the JS SDK saw a form of the real secret in a refusal")
	}
}
