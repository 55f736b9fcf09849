package sdk

// aws-sdk-go-v2 through Phantom's auth_type=aws_sigv4 routes: the agent
// holds a phantom token as its AWS access key id and any secret; the proxy
// re-signs each request for the stand-in AWS upstream (awsupstream_test.go),
// which accepts nothing but signatures made with the real secret.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/bedrockruntime"
	brtypes "github.com/aws/aws-sdk-go-v2/service/bedrockruntime/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/phantomvault/phantom/e2e/harness"
)

const (
	awsAccessKeyID = "AKIAIOSFODNN7EXAMPLE"
	awsSecretKey   = "wJalrXUtnFEMI/K7MDENG+PHANTOMrealSECRET00" // the real secret access key: never leaves Vault
	awsRegion      = "us-east-1"
	bedrockModel   = "anthropic.claude-3-haiku-20240307-v1:0"
	// agentSecret is what the agent sets as AWS_SECRET_ACCESS_KEY: anything.
	agentSecret = "phantom-agents-secret-is-junk"
)

// clearAWSEnv keeps the SDK from reading credentials, regions, endpoints or
// profiles from the test's environment or home directory.
func clearAWSEnv(t *testing.T) {
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
		"AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_BEDROCK_RUNTIME",
		"AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_REQUEST_CHECKSUM_CALCULATION", "AWS_RESPONSE_CHECKSUM_VALIDATION"} {
		t.Setenv(k, "")
	}
}

// agentConfig is the config an agent loads, with static credentials.
func agentConfig(t *testing.T, akid, secret string, opts ...func(*config.LoadOptions) error) aws.Config {
	t.Helper()
	opts = append([]func(*config.LoadOptions) error{
		config.WithRegion(awsRegion),
		config.WithCredentialsProvider(aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: akid, SecretAccessKey: secret, Source: "test"}, nil
		})),
		config.WithSharedConfigFiles([]string{}), config.WithSharedCredentialsFiles([]string{}),
	}, opts...)
	cfg, err := config.LoadDefaultConfig(context.Background(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// newS3Client points S3 at endpoint with path-style addressing.
func newS3Client(cfg aws.Config, endpoint string, hc *http.Client) *s3.Client {
	return s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(endpoint)
		o.UsePathStyle = true
		if hc != nil {
			o.HTTPClient = hc
		}
	})
}

func newBedrockClient(cfg aws.Config, endpoint string, hc *http.Client) *bedrockruntime.Client {
	return bedrockruntime.NewFromConfig(cfg, func(o *bedrockruntime.Options) {
		o.BaseEndpoint = aws.String(endpoint)
		if hc != nil {
			o.HTTPClient = hc
		}
	})
}

func converseInput() *bedrockruntime.ConverseInput {
	return &bedrockruntime.ConverseInput{ModelId: aws.String(bedrockModel), Messages: []brtypes.Message{{
		Role: brtypes.ConversationRoleUser, Content: []brtypes.ContentBlock{&brtypes.ContentBlockMemberText{Value: "hi"}}}}}
}

func converseText(out *bedrockruntime.ConverseOutput) string {
	if m, ok := out.Output.(*brtypes.ConverseOutputMemberMessage); ok && len(m.Value.Content) > 0 {
		if tb, ok := m.Value.Content[0].(*brtypes.ContentBlockMemberText); ok {
			return tb.Value
		}
	}
	return ""
}

func hexSHA256(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func hexDecode(s string) ([]byte, error) { return hex.DecodeString(s) }

// testPayload is n bytes that differ from chunk to chunk.
func testPayload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/4096)
	}
	return b
}

// patternReaderAt serves testPayload's bytes at any offset without holding
// them: a several-MiB streaming body.
type patternReaderAt struct{}

func (patternReaderAt) ReadAt(p []byte, off int64) (int, error) {
	for i := range p {
		j := off + int64(i)
		p[i] = byte(j*7 + j/4096)
	}
	return len(p), nil
}

func getObject(t *testing.T, c *s3.Client, bucket, key string) []byte {
	t.Helper()
	out, err := c.GetObject(context.Background(), &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatalf("GetObject %s/%s: %v", bucket, key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		t.Fatalf("GetObject %s/%s body: %v", bucket, key, err)
	}
	return b
}

// forbiddenForms are the forms of the real secret an agent must never see:
// the key itself, its base64 and URL encodings, and the SigV4 signing keys
// derived from it (what the engine hands the proxy) for yesterday, today and
// tomorrow in hex and base64.
func forbiddenForms() []string {
	forms := []string{awsSecretKey, base64.StdEncoding.EncodeToString([]byte(awsSecretKey)), url.QueryEscape(awsSecretKey), url.PathEscape(awsSecretKey)}
	for _, d := range []time.Duration{-24 * time.Hour, 0, 24 * time.Hour} {
		for _, svc := range []string{"s3", "bedrock"} {
			k := signingKey(awsSecretKey, time.Now().Add(d), awsRegion, svc)
			forms = append(forms, hex.EncodeToString(k), base64.StdEncoding.EncodeToString(k))
		}
	}
	return forms
}

// findSecret reports which forbidden form text holds, if any.
func findSecret(text string) string {
	for _, f := range forbiddenForms() {
		if strings.Contains(text, f) {
			return f
		}
	}
	return ""
}

// leakCheck is the agent's HTTP transport, recording the status line,
// headers and body of every response the SDK receives; each test fails if
// any of it holds a form of the real secret.
type leakCheck struct {
	base http.RoundTripper
	mu   sync.Mutex
	seen bytes.Buffer
	n    int
}

func newLeakCheck(t *testing.T, base http.RoundTripper) (*leakCheck, *http.Client) {
	lc := &leakCheck{base: base}
	t.Cleanup(func() {
		if f := lc.find(); f != "" {
			t.Errorf("the agent saw a form of the real secret (%q) in a response", f)
		}
	})
	return lc, &http.Client{Transport: lc}
}

func (lc *leakCheck) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := lc.base.RoundTrip(r)
	if err != nil {
		return resp, err
	}
	lc.mu.Lock()
	lc.n++
	fmt.Fprintf(&lc.seen, "%s\n", resp.Status)
	resp.Header.Write(&lc.seen)
	lc.mu.Unlock()
	resp.Body = &teeBody{ReadCloser: resp.Body, lc: lc}
	return resp, nil
}

type teeBody struct {
	io.ReadCloser
	lc *leakCheck
}

func (b *teeBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.lc.mu.Lock()
	b.lc.seen.Write(p[:n])
	b.lc.mu.Unlock()
	return n, err
}

func (lc *leakCheck) find() string {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return findSecret(lc.seen.String())
}

func (lc *leakCheck) responses() int {
	lc.mu.Lock()
	defer lc.mu.Unlock()
	return lc.n
}

// awsStack is Vault, the stand-in AWS upstream and the proxy, with routes
// s3 and bedrock (extra route arguments go to both).
type awsStack struct {
	v        *harness.Vault
	up       *awsUpstream
	p        *harness.Proxy
	upstream *harness.Upstream
}

func startAWSStack(t *testing.T, s3Extra ...string) *awsStack {
	t.Helper()
	clearAWSEnv(t)
	v := harness.StartDevVault(t)
	up := newAWSUpstream(realAWS, awsRegion)
	hu := harness.StartUpstream(t, up)
	writeAWSRoute(t, v, "s3", hu.URL, "s3", append([]string{"allowed_paths=/**", "allowed_methods=GET,PUT,HEAD,POST,DELETE"}, s3Extra...)...)
	writeAWSRoute(t, v, "bedrock", hu.URL, "bedrock", "allowed_paths=/model/**", "allowed_methods=POST")
	p := harness.StartProxy(t, v)
	return &awsStack{v: v, up: up, p: p, upstream: hu}
}

func writeAWSRoute(t *testing.T, v *harness.Vault, name, upstream, service string, extra ...string) {
	t.Helper()
	args := append([]string{"write", "phantom/routes/" + name, "upstream=" + upstream, "auth_type=aws_sigv4",
		"access_key_id=" + awsAccessKeyID, "secret_access_key=" + awsSecretKey, "region=" + awsRegion, "service=" + service}, extra...)
	v.MustCLI(t, args...)
}

// checkArrivals fails unless every request the upstream received was
// verified, none carried the phantom token anywhere, and there were want
// of them (any number when want < 0).
func checkArrivals(t *testing.T, up *awsUpstream, tok string, want int) []awsArrival {
	t.Helper()
	arr := up.Arrivals()
	for _, a := range arr {
		if a.Verified == nil {
			t.Errorf("the upstream refused %s %s?%s: %s\n%v", a.Method, a.Path, a.RawQuery, a.Refusal, a.Header)
		}
		var h bytes.Buffer
		a.Header.Write(&h)
		if strings.Contains(h.String()+a.Path+a.RawQuery, tok) {
			t.Errorf("the upstream received the phantom token in %s %s", a.Method, a.Path)
		}
	}
	if want >= 0 && len(arr) != want {
		t.Errorf("the upstream received %d requests, want %d", len(arr), want)
	}
	return arr
}

// TestAWSS3SDK: PutObject of a several-MiB streaming body, GetObject,
// HeadObject, ListObjectsV2 and a presigned GET, through the proxy's
// base URL with the phantom token as access key id.
func TestAWSS3SDK(t *testing.T) {
	st := startAWSStack(t)
	tok, _ := st.v.Mint(t, "s3", "ttl=1h")
	lc, hc := newLeakCheck(t, http.DefaultTransport)
	cfg := agentConfig(t, tok, agentSecret)
	c := newS3Client(cfg, st.p.URL, hc)
	ctx := context.Background()

	// Over plain http aws-sdk-go-v2 needs a seekable body (an io.Reader
	// alone fails in the SDK: "unseekable stream is not supported without
	// TLS and trailing checksum"), so the stream is a SectionReader
	// generating its bytes as it is read.
	const size = 8<<20 + 3
	want := testPayload(size)
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("agent-bucket"), Key: aws.String("reports/2024 q1.bin"),
		Body: io.NewSectionReader(patternReaderAt{}, 0, size), ContentType: aws.String("application/octet-stream")}); err != nil {
		t.Fatalf("PutObject: %v\nproxy output:\n%s", err, st.p.Out)
	}
	if got := getObject(t, c, "agent-bucket", "reports/2024 q1.bin"); !bytes.Equal(got, want) {
		t.Fatalf("GetObject: %d bytes, sha256 %s; want %d, %s", len(got), hexSHA256(got), size, hexSHA256(want))
	}
	head, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String("agent-bucket"), Key: aws.String("reports/2024 q1.bin")})
	if err != nil || aws.ToInt64(head.ContentLength) != size {
		t.Fatalf("HeadObject: %v %+v", err, head)
	}
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("agent-bucket"), Key: aws.String("reports/small.txt"), Body: strings.NewReader("small")}); err != nil {
		t.Fatalf("PutObject small: %v", err)
	}
	list, err := c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String("agent-bucket"), Prefix: aws.String("reports/")})
	if err != nil || len(list.Contents) != 2 || aws.ToString(list.Contents[0].Key) != "reports/2024 q1.bin" || aws.ToInt64(list.Contents[0].Size) != size {
		t.Fatalf("ListObjectsV2: %v %+v", err, list)
	}

	// A presigned GET made with the phantom token, fetched by a plain client.
	pre, err := s3.NewPresignClient(c).PresignGetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("agent-bucket"), Key: aws.String("reports/small.txt")},
		s3.WithPresignExpires(10*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(pre.URL, st.p.URL+"/") || !strings.Contains(pre.URL, url.QueryEscape(tok)) {
		t.Fatalf("the presigned URL %q does not go to the proxy with the phantom token", pre.URL)
	}
	resp, err := hc.Get(pre.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "small" {
		t.Fatalf("presigned GET: %d %s", resp.StatusCode, body)
	}

	arr := checkArrivals(t, st.up, tok, 6)
	if v := arr[0].Verified; v != nil && (len(v.PayloadForm) != 64 || !bytes.Equal(v.Body, want) || v.Checksum == "") {
		t.Errorf("PutObject reached the upstream as %q with %d bytes, checksum %q; want a signed payload hash, the bytes and a CRC32",
			v.PayloadForm, len(v.Body), v.Checksum)
	}
	// The proxy signs a presigned URL's request again in its headers (and
	// refuses it once X-Amz-Expires has passed): the upstream verified it.
	if v := arr[5].Verified; v == nil || v.Presigned {
		t.Errorf("the presigned GET did not reach the upstream signed again in its headers")
	}
	if lc.responses() != 6 {
		t.Errorf("the SDK received %d responses, want 6 (no retries)", lc.responses())
	}
}

// TestAWSBedrockSDK: Converse and InvokeModel (a JSON POST to
// /model/{id}/..., service bedrock, no x-amz-content-sha256) through the
// proxy.
func TestAWSBedrockSDK(t *testing.T) {
	st := startAWSStack(t)
	tok, _ := st.v.Mint(t, "bedrock", "ttl=1h")
	_, hc := newLeakCheck(t, http.DefaultTransport)
	br := newBedrockClient(agentConfig(t, tok, agentSecret), st.p.URL, hc)
	ctx := context.Background()
	out, err := br.Converse(ctx, converseInput())
	if err != nil {
		t.Fatalf("Converse: %v\nproxy output:\n%s", err, st.p.Out)
	}
	if text := converseText(out); text != "hello from bedrock "+bedrockModel {
		t.Fatalf("Converse: %q", text)
	}
	inv, err := br.InvokeModel(ctx, &bedrockruntime.InvokeModelInput{ModelId: aws.String(bedrockModel), ContentType: aws.String("application/json"),
		Body: []byte(`{"anthropic_version":"bedrock-2023-05-31","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}`)})
	if err != nil || !strings.Contains(string(inv.Body), `"echo":{"anthropic_version"`) {
		t.Fatalf("InvokeModel: %v %s", err, inv.Body)
	}
	for _, a := range checkArrivals(t, st.up, tok, 2) {
		if a.Verified != nil && a.Header.Get("X-Amz-Content-Sha256") != "" {
			t.Logf("note: the proxy sent x-amz-content-sha256 %q to bedrock", a.Header.Get("X-Amz-Content-Sha256"))
		}
	}
}

// statusOf is the HTTP status of an SDK error.
func statusOf(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// TestAWSAllowedActions: a route that allows only s3:GetObject refuses
// PutObject and ListObjectsV2 with 403 before the upstream sees them, and
// lets GetObject through.
func TestAWSAllowedActions(t *testing.T) {
	st := startAWSStack(t, "allowed_actions=s3:GetObject")
	tok, _ := st.v.Mint(t, "s3", "ttl=1h")
	lc, hc := newLeakCheck(t, http.DefaultTransport)
	c := newS3Client(agentConfig(t, tok, agentSecret), st.p.URL, hc)
	ctx := context.Background()

	_, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("b"), Key: aws.String("k"), Body: strings.NewReader("not allowed")})
	if statusOf(err) != http.StatusForbidden {
		t.Fatalf("PutObject with only s3:GetObject allowed: %v, want 403", err)
	}
	_, err = c.ListObjectsV2(ctx, &s3.ListObjectsV2Input{Bucket: aws.String("b")})
	if statusOf(err) != http.StatusForbidden {
		t.Fatalf("ListObjectsV2 with only s3:GetObject allowed: %v, want 403", err)
	}
	if n := len(st.up.Arrivals()); n != 0 {
		t.Fatalf("the upstream received %d requests the route does not allow", n)
	}
	if lc.responses() != 2 {
		t.Errorf("the SDK received %d responses, want 2: a 403 is not retried", lc.responses())
	}
	// GetObject is allowed: it reaches the upstream, verified (the key does
	// not exist there: S3's 404).
	_, err = c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("b"), Key: aws.String("k")})
	if statusOf(err) != http.StatusNotFound {
		t.Fatalf("GetObject: %v, want the upstream's 404 NoSuchKey", err)
	}
	checkArrivals(t, st.up, tok, 1)
}

// TestAWSChunkSignedUpload: an upload in STREAMING-AWS4-HMAC-SHA256-PAYLOAD
// form (aws-chunked, each chunk signed from the previous signature), built
// with the SDK's signer and StreamSigner from the phantom token and a junk
// secret: the proxy re-signs every chunk and the upstream verifies each.
func TestAWSChunkSignedUpload(t *testing.T) {
	st := startAWSStack(t)
	tok, _ := st.v.Mint(t, "s3", "ttl=1h")
	lc, hc := newLeakCheck(t, http.DefaultTransport)
	agent := aws.Credentials{AccessKeyID: tok, SecretAccessKey: agentSecret}
	const chunk = 64 * 1024
	data := testPayload(3*chunk + 1234)
	now := time.Now().UTC()

	req, err := http.NewRequest(http.MethodPut, st.p.URL+"/agent-bucket/chunked.bin", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.ContentLength = int64(encodedChunkedLength(len(data), chunk))
	req.Header.Set("Content-Encoding", "aws-chunked")
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("X-Amz-Decoded-Content-Length", strconv.Itoa(len(data)))
	req.Header.Set("X-Amz-Content-Sha256", payloadStreamSigned)
	if err := v4.NewSigner().SignHTTP(context.Background(), agent, req, payloadStreamSigned, "s3", awsRegion, now,
		func(o *v4.SignerOptions) { o.DisableURIPathEscaping = true }); err != nil {
		t.Fatal(err)
	}
	body := encodeSignedChunks(agent, "s3", awsRegion, seedSignature(t, req), now, data, chunk)
	req.Body = io.NopCloser(bytes.NewReader(body))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	rb, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("chunk-signed PUT: %d %s\nproxy output:\n%s", resp.StatusCode, rb, st.p.Out)
	}
	arr := checkArrivals(t, st.up, tok, 1)
	if v := arr[0].Verified; v != nil && (v.PayloadForm != payloadStreamSigned || v.ChunkSigs != 5 || !bytes.Equal(v.Body, data)) {
		t.Fatalf("the upstream got %s with %d chunk signatures checked and %d bytes; want %s, 5, %d",
			v.PayloadForm, v.ChunkSigs, len(v.Body), payloadStreamSigned, len(data))
	}
	// The object reads back through the SDK.
	c := newS3Client(agentConfig(t, tok, agentSecret), st.p.URL, hc)
	if got := getObject(t, c, "agent-bucket", "chunked.bin"); !bytes.Equal(got, data) {
		t.Fatalf("GetObject after the chunk-signed upload: %d bytes", len(got))
	}
	_ = lc
}

// awsForwardChildEnv marks the child process of TestAWSS3ThroughHTTPSProxy.
const awsForwardChildEnv = "PHANTOM_SDK_AWS_FORWARD_CHILD"

// TestAWSS3ThroughHTTPSProxy: the agent talks to the S3 stand-in's own
// https URL through HTTPS_PROXY (forward mode), configured by its
// environment, in a child process (Go reads HTTPS_PROXY and SSL_CERT_FILE
// once per process). Over TLS aws-sdk-go-v2 sends an unseekable stream as
// STREAMING-UNSIGNED-PAYLOAD-TRAILER (aws-chunked, CRC32 in the trailer)
// and, with checksums only when required, a seekable one as
// UNSIGNED-PAYLOAD.
func TestAWSS3ThroughHTTPSProxy(t *testing.T) {
	if os.Getenv(awsForwardChildEnv) == "1" {
		awsForwardChild(t)
		return
	}
	clearAWSEnv(t)
	v := harness.StartDevVault(t)
	ca := harness.NewUpstreamCA(t)
	up := newAWSUpstream(realAWS, awsRegion)
	api := harness.StartTLSUpstream(t, ca, "s3.us-east-1.aws.phantom.test", up)
	writeAWSRoute(t, v, "s3", api.URL, "s3", "allowed_paths=/**", "allowed_methods=GET,PUT,HEAD")
	fp := harness.StartForwardProxy(t, v, ca, []*harness.TLSUpstream{api})
	tok, _ := v.Mint(t, "s3", "ttl=1h")

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestAWSS3ThroughHTTPSProxy$", "-test.v")
	cmd.Env = append(fp.ClientEnv(t, ""), awsForwardChildEnv+"=1", "CI="+os.Getenv("CI"), "VAULT_BIN="+os.Getenv("VAULT_BIN"),
		"GOCACHE="+goEnv(t, "GOCACHE"), "GOPATH="+goEnv(t, "GOPATH"), "GOFLAGS="+os.Getenv("GOFLAGS"),
		"AWS_ACCESS_KEY_ID="+tok, "AWS_SECRET_ACCESS_KEY="+agentSecret, "AWS_REGION="+awsRegion,
		"AWS_ENDPOINT_URL_S3="+api.URL, "AWS_EC2_METADATA_DISABLED=true")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "PUT-STREAM ok") || !strings.Contains(string(out), "PUT-UNSIGNED ok") || !strings.Contains(string(out), "GET ok") {
		t.Fatalf("the child: %v\n%s\nproxy output:\n%s", err, out, fp.Out)
	}
	if f := findSecret(string(out)); f != "" {
		t.Fatalf("the agent printed a form of the real secret")
	}
	forms := map[string]int{}
	for _, a := range checkArrivals(t, up, tok, -1) {
		if a.Method == http.MethodPut && a.Verified != nil {
			forms[a.Verified.PayloadForm]++
		}
	}
	if forms[payloadStreamUnsignTrlr] != 1 || forms[payloadUnsigned] != 1 {
		t.Fatalf("PutObject payload forms at the upstream: %v; want one %s and one %s", forms, payloadStreamUnsignTrlr, payloadUnsigned)
	}
}

// awsForwardChild is the agent: config from the environment, path-style
// addressing, the SDK's default HTTP client (which honours HTTPS_PROXY).
func awsForwardChild(t *testing.T) {
	ctx := context.Background()
	_, hc := newLeakCheck(t, awshttp.NewBuildableClient().GetTransport())
	cfg, err := config.LoadDefaultConfig(ctx, config.WithHTTPClient(hc))
	if err != nil {
		t.Fatal(err)
	}
	c := s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = true })
	const size = 5<<20 + 11
	data := testPayload(size)
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("fwd"), Key: aws.String("stream.bin"), Body: onlyReader{bytes.NewReader(data)}}); err != nil {
		t.Fatalf("PutObject, an unseekable stream: %v", err)
	}
	fmt.Println("PUT-STREAM ok")
	cfg.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
	c2 := s3.NewFromConfig(cfg, func(o *s3.Options) { o.UsePathStyle = true })
	if _, err := c2.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String("fwd"), Key: aws.String("seekable.bin"), Body: bytes.NewReader(data[:1<<20])}); err != nil {
		t.Fatalf("PutObject, seekable, checksums when required: %v", err)
	}
	fmt.Println("PUT-UNSIGNED ok")
	out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("fwd"), Key: aws.String("stream.bin")})
	if err != nil {
		t.Fatalf("GetObject: %v", err)
	}
	got, err := io.ReadAll(out.Body)
	out.Body.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("GetObject: %v, %d bytes, want %d", err, len(got), size)
	}
	if got := getObject(t, c, "fwd", "seekable.bin"); !bytes.Equal(got, data[:1<<20]) {
		t.Fatalf("GetObject seekable.bin: %d bytes", len(got))
	}
	fmt.Println("GET ok")
}
