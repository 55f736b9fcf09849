package proxy

import (
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/phantomvault/phantom/internal/resolve"
	"github.com/phantomvault/phantom/internal/sigv4"
	"github.com/phantomvault/phantom/internal/sigv4/sigv4test"
)

const (
	awsKeyID  = "AKIAIOSFODNN7EXAMPLE"
	awsSecret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
)

// awsGrant makes a test proxy's grant an aws_sigv4 one, as the engine
// sends it: the day's signing key, never the secret.
func awsGrant(service string) func(*Grant) {
	return func(g *Grant) {
		day := time.Now().UTC().Format(sigv4.DateFormat)
		g.AuthType, g.AuthName, g.AuthFormat = resolve.AuthAWSSigV4, "Authorization", resolve.Placeholder
		g.Credential = hex.EncodeToString(sigv4.SigningKey(awsSecret, day, "us-east-1", service))
		g.AWS = &resolve.AWSGrant{AccessKeyID: awsKeyID, Region: "us-east-1", Service: service, Date: day, SessionToken: "FwoGSESSION"}
	}
}

// awsUpstream checks every request's signature with the real secret,
// chunks included, and answers 403 to any it cannot verify.
type awsUpstream struct {
	mu       sync.Mutex
	received []*http.Request
	bodies   []string
	service  string
}

func (u *awsUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	u.mu.Lock()
	u.received = append(u.received, r)
	u.bodies = append(u.bodies, string(body))
	u.mu.Unlock()
	if err := sigv4test.Verify(r, body, awsKeyID, awsSecret, u.service); err != nil {
		http.Error(w, "SignatureDoesNotMatch: "+err.Error(), http.StatusForbidden)
		return
	}
	w.Write([]byte("ok " + awsKeyID + " " + strings.ToLower(awsKeyID))) // an echo of the key id comes back masked
}

// agentSigned is a request as an AWS SDK makes it through the proxy: signed
// with the phantom token as the access key id and a junk secret.
func agentSigned(t *testing.T, p *testProxy, method, target, body, service string) *http.Request {
	t.Helper()
	req, _ := http.NewRequest(method, p.url+target, strings.NewReader(body))
	day := time.Now().UTC().Format(sigv4.DateFormat)
	junk := &sigv4.Signer{Key: sigv4.SigningKey("junk", day, "us-east-1", service), AccessKeyID: p.token, Date: day, Region: "us-east-1", Service: service}
	req.Header.Set("X-Amz-Security-Token", "agent-junk")
	if service == "s3" {
		req.Header.Set("X-Amz-Content-Sha256", sigv4.HexSHA256([]byte(body)))
	}
	if _, err := junk.SignRequest(req, time.Now().UTC().Format(sigv4.TimeFormat), sigv4.HexSHA256([]byte(body)), "", service != "s3"); err != nil {
		t.Fatal(err)
	}
	return req
}

func TestSigV4IsSignedAgainWithTheDaysKey(t *testing.T) {
	p, up := awsProxy(t, "s3")

	resp, got := send(t, agentSigned(t, p, "PUT", "/bucket/a%20key.txt?x-id=PutObject", "hello", "s3"))
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, got)
	}
	if strings.Contains(string(got), awsKeyID) {
		t.Fatalf("the access key id came back: %s", got)
	}
	r := up.received[0]
	if strings.Contains(r.Header.Get("Authorization")+r.URL.RawQuery, p.token) || r.Header.Get("X-Amz-Security-Token") != "FwoGSESSION" {
		t.Fatalf("upstream saw %v", r.Header)
	}
	if a := p.engine.Resolves()[0].Action; a != "s3:PutObject" {
		t.Fatalf("resolved action %q", a)
	}
}

func TestSigV4PresignedURLIsSignedInTheHeader(t *testing.T) {
	p, up := awsProxy(t, "s3")
	presign := func(signedAt time.Time) string {
		return "/bucket/key?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=" + p.token + "%2F" + signedAt.Format(sigv4.DateFormat) +
			"%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=" + signedAt.Format(sigv4.TimeFormat) + "&X-Amz-Expires=300&X-Amz-SignedHeaders=host&X-Amz-Signature=" + strings.Repeat("0", 64) + "&versionId=7"
	}
	status, body := p.get(t, presign(time.Now().UTC()))
	if status != 200 {
		t.Fatalf("%d %s", status, body)
	}
	r := up.received[0]
	if strings.Contains(r.URL.RawQuery, "X-Amz-") || r.URL.RawQuery != "versionId=7" {
		t.Fatalf("upstream query %q", r.URL.RawQuery)
	}
	if a := p.engine.Resolves()[0].Action; a != "s3:GetObject" {
		t.Fatalf("resolved action %q", a)
	}
	if status, _ := p.get(t, presign(time.Now().UTC().Add(-10*time.Minute))); status != 401 {
		t.Fatalf("an expired presigned URL: %d", status)
	}
}

func (p *testProxy) get(t *testing.T, target string) (int, string) {
	t.Helper()
	resp, err := http.Get(p.url + target)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestSigV4StreamingChunksAreSignedAgain(t *testing.T) {
	p, up := awsProxy(t, "s3")
	zero := strings.Repeat("0", 64)
	chunk := strings.Repeat("x", 70000)
	body := "11170;chunk-signature=" + zero + "\r\n" + chunk + "\r\n0;chunk-signature=" + zero + "\r\n\r\n"
	req := agentSigned(t, p, "PUT", "/bucket/big", "", "s3")
	req.Body, req.ContentLength = io.NopCloser(strings.NewReader(body)), int64(len(body))
	req.Header.Set("X-Amz-Content-Sha256", sigv4.StreamingSigned)
	req.Header.Set("Content-Encoding", "aws-chunked")
	resp, got := send(t, req)
	if resp.StatusCode != 200 || len(up.bodies[0]) != len(body) || strings.Contains(up.bodies[0], zero) {
		t.Fatalf("%d %s; upstream body of %d bytes", resp.StatusCode, got, len(up.bodies[0]))
	}

	// A malformed body is the agent's error, and nothing verifies upstream.
	req = agentSigned(t, p, "PUT", "/bucket/bad", "", "s3")
	bad := "5;chunk-signature=" + zero + "\r\nhello!!\r\n"
	req.Body, req.ContentLength = io.NopCloser(strings.NewReader(bad)), int64(len(bad))
	req.Header.Set("X-Amz-Content-Sha256", sigv4.StreamingSigned)
	resp, got = send(t, req)
	if resp.StatusCode != 400 || !strings.Contains(string(got), "aws-chunked") {
		t.Fatalf("a malformed chunk: %d %s", resp.StatusCode, got)
	}
}

func TestSigV4JSONServiceBodyIsHashed(t *testing.T) {
	p, _ := awsProxy(t, "bedrock")
	resp, got := send(t, agentSigned(t, p, "POST", "/model/anthropic.claude%3Av1/converse", `{"messages":[]}`, "bedrock"))
	if resp.StatusCode != 200 {
		t.Fatalf("%d %s", resp.StatusCode, got)
	}
	if a := p.engine.Resolves()[0].Action; a != "bedrock:Converse" {
		t.Fatalf("resolved action %q", a)
	}
}

func TestSigV4CopySourceMustBeReadable(t *testing.T) {
	p, up := awsProxy(t, "s3")
	req := agentSigned(t, p, "PUT", "/bucket/copy", "", "s3")
	req.Header.Set("X-Amz-Copy-Source", "/secret-bucket/key")
	send(t, req)
	resolves := p.engine.Resolves()
	if len(resolves) != 2 || resolves[1].Method != "GET" || resolves[1].Path != "/secret-bucket/key" || resolves[0].Action != "s3:CopyObject" {
		t.Fatalf("resolves %+v", resolves)
	}
	// The source out of the token's scope: nothing is forwarded.
	p.engine.DenyPath("/secret-bucket/key", resolve.ReasonPathNotAllowed)
	n := len(up.received)
	req = agentSigned(t, p, "PUT", "/bucket/copy", "", "s3")
	req.Header.Set("X-Amz-Copy-Source", "/secret-bucket/key")
	if resp, _ := send(t, req); resp.StatusCode != 403 || len(up.received) != n {
		t.Fatalf("%d, upstream saw %d", resp.StatusCode, len(up.received)-n)
	}
}

// TestSigV4FormActionIsRead: a query-protocol request names its operation
// in its url-encoded body; the proxy reads it for the engine, and forwards
// the same bytes.
func TestSigV4FormActionIsRead(t *testing.T) {
	p, up := awsProxy(t, "sts")
	form := "Action=GetCallerIdentity&Version=2011-06-15"
	req := agentSigned(t, p, "POST", "/", form, "sts")
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	resp, got := send(t, req)
	if resp.StatusCode != 200 || up.bodies[0] != form {
		t.Fatalf("%d %s; upstream body %q", resp.StatusCode, got, up.bodies)
	}
	if a := p.engine.Resolves()[0].Action; a != "sts:GetCallerIdentity" {
		t.Fatalf("resolved action %q", a)
	}
	// Two actions, one in the URL and one in the body: none is told.
	req = agentSigned(t, p, "POST", "/?Action=GetCallerIdentity", "Action=AssumeRole", "sts")
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	send(t, req)
	if a := p.engine.Resolves()[1].Action; a != "" {
		t.Fatalf("two actions resolved as %q", a)
	}
}

// awsProxy is a test proxy whose token's grant is an aws_sigv4 one for
// service, in front of an upstream that verifies every signature.
func awsProxy(t *testing.T, service string) (*testProxy, *awsUpstream) {
	t.Helper()
	up := &awsUpstream{service: service}
	ts := httptest.NewServer(up)
	t.Cleanup(ts.Close)
	return newTestProxy(t, ts.URL, awsGrant(service)), up
}

// send sends req and returns the response with its body read.
func send(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

// TestSigV4AttackFindings: what the third attack on signed routes found.
func TestSigV4AttackFindings(t *testing.T) {
	p, up := awsProxy(t, "s3")
	// Two x-amz-copy-source headers: the proxy checked the first, S3 may
	// read the other. Refused, nothing forwarded.
	req := agentSigned(t, p, "PUT", "/bucket/stolen", "", "s3")
	req.Header.Add("X-Amz-Copy-Source", "/bucket/mine")
	req.Header.Add("X-Amz-Copy-Source", "/secret-bucket/payroll.csv")
	if resp, body := send(t, req); resp.StatusCode != 400 || len(up.received) != 0 {
		t.Fatalf("a repeated copy source: %d %s, upstream saw %d", resp.StatusCode, body, len(up.received))
	}
	// A presigned URL that says it was signed in 2099 is not good until then.
	future := time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)
	target := "/bucket/key?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=" + p.token + "%2F20990101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=" +
		future.Format(sigv4.TimeFormat) + "&X-Amz-Expires=60&X-Amz-SignedHeaders=host&X-Amz-Signature=" + strings.Repeat("0", 64)
	if status, body := p.get(t, target); status != 401 || len(up.received) != 0 {
		t.Fatalf("a presigned URL from the future: %d %s", status, body)
	}
	// The key id echoed in lower case comes back masked too.
	resp, body := send(t, agentSigned(t, p, "GET", "/bucket/key", "", "s3"))
	if resp.StatusCode != 200 || strings.Contains(strings.ToLower(string(body)), strings.ToLower(awsKeyID)) {
		t.Fatalf("%d %s", resp.StatusCode, body)
	}

	// STS: an action in the URL and another in a body sent without a
	// Content-Type tell nothing.
	sts, _ := awsProxy(t, "sts")
	req = agentSigned(t, sts, "POST", "/?Action=GetCallerIdentity", "Action=AssumeRole&RoleArn=x", "sts")
	req.Header.Del("Content-Type")
	send(t, req)
	if a := sts.engine.Resolves()[0].Action; a != "" {
		t.Fatalf("an action in the URL and one in the body resolved as %q", a)
	}
}

// TestSigV4SecondAttackFindings: what the fourth attack found.
func TestSigV4SecondAttackFindings(t *testing.T) {
	p, up := awsProxy(t, "s3")
	// A batch delete's keys are each checked as a DELETE of their path.
	p.engine.DenyPath("/bucket/secret/payroll.csv", resolve.ReasonPathNotAllowed)
	batch := func(keys ...string) *http.Request {
		body := "<Delete>"
		for _, k := range keys {
			body += "<Object><Key>" + k + "</Key></Object>"
		}
		body += "</Delete>"
		req := agentSigned(t, p, "POST", "/bucket/?delete", body, "s3")
		req.Header.Set("Content-Type", "application/xml")
		return req
	}
	if resp, body := send(t, batch("agent/a.txt", "secret/payroll.csv")); resp.StatusCode != 403 || len(up.received) != 0 {
		t.Fatalf("a batch delete naming a key out of scope: %d %s, upstream saw %d", resp.StatusCode, body, len(up.received))
	}
	before := len(p.engine.Resolves())
	if resp, body := send(t, batch("agent/a.txt", "agent/b c.txt")); resp.StatusCode != 200 || len(up.received) != 1 || !strings.Contains(up.bodies[0], "<Key>agent/b c.txt</Key>") {
		t.Fatalf("a batch delete in scope: %d %s", resp.StatusCode, body)
	}
	var deletes []string
	for _, r := range p.engine.Resolves()[before:] {
		if r.Method == "DELETE" {
			deletes = append(deletes, r.Path)
		}
	}
	if len(deletes) != 2 || !slices.Contains(deletes, "/bucket/agent/b%20c.txt") {
		t.Fatalf("the keys resolved: %v", deletes)
	}
	if resp, _ := send(t, batch()); resp.StatusCode != 400 {
		t.Fatalf("a batch delete naming no key: %d", resp.StatusCode)
	}

	// A query API: an action in the URL and a body of any type but JSON,
	// GET included, tell no action; a JSON body with X-Amz-Target is not
	// read.
	sts, _ := awsProxy(t, "sts")
	for i, c := range []struct{ method, contentType string }{{"POST", "text/plain"}, {"POST", "application/x-www-form-urlencoded, text/plain"}, {"GET", ""}} {
		req := agentSigned(t, sts, c.method, "/?Action=GetCallerIdentity", "Action=AssumeRole&RoleArn=x", "sts")
		req.Header.Set("Content-Type", c.contentType)
		send(t, req)
		if a := sts.engine.Resolves()[i].Action; a != "" {
			t.Fatalf("%s %q: resolved as %q", c.method, c.contentType, a)
		}
	}
	ddb, _ := awsProxy(t, "dynamodb")
	req := agentSigned(t, ddb, "POST", "/", `{"TableName":"t"}`, "dynamodb")
	req.Header.Set("Content-Type", "application/x-amz-json-1.0")
	req.Header.Set("X-Amz-Target", "DynamoDB_20120810.GetItem")
	send(t, req)
	if a := ddb.engine.Resolves()[0].Action; a != "dynamodb:GetItem" {
		t.Fatalf("a JSON protocol request resolved as %q", a)
	}
}
