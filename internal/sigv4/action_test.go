package sigv4

import (
	"net/http"
	"net/url"
	"testing"
)

func TestAction(t *testing.T) {
	for _, c := range []struct {
		service, method, target, header string
		want                            string
	}{
		{"s3", "GET", "/b/k?x-id=GetObject", "", "s3:GetObject"},
		{"s3", "HEAD", "/b/k", "", "s3:HeadObject"},
		{"s3", "PUT", "/b/k/deeper?x-id=PutObject", "", "s3:PutObject"},
		{"s3", "PUT", "/b/k", "X-Amz-Copy-Source: other/secret", "s3:CopyObject"},
		{"s3", "PUT", "/b/k?partNumber=1&uploadId=u", "", "s3:UploadPart"},
		{"s3", "PUT", "/b/k?tagging", "", "s3:PutObjectTagging"},
		{"s3", "PUT", "/b/k", "X-Amz-Acl: public-read", "s3:PutObject,s3:PutObjectAcl"},
		{"s3", "PUT", "/b/k", "X-Amz-Grant-Read: uri=http://acs.amazonaws.com/groups/global/AllUsers", "s3:PutObject,s3:PutObjectAcl"},
		{"s3", "PUT", "/b", "X-Amz-Acl: public-read", "s3:CreateBucket,s3:PutBucketAcl"},
		{"s3", "PUT", "/b/k", "X-Amz-Tagging: a=b", "s3:PutObject,s3:PutObjectTagging"},
		{"s3", "DELETE", "/b/k", "X-Amz-Bypass-Governance-Retention: true", "s3:DeleteObject,s3:BypassGovernanceRetention"},
		{"s3", "GET", "/b?list-type=2&prefix=a", "", "s3:ListObjectsV2"},
		{"s3", "GET", "/b/", "", "s3:ListObjects"},
		{"s3", "GET", "/", "", "s3:ListBuckets"},
		{"s3", "POST", "/b?delete", "", "s3:DeleteObjects"},
		{"s3", "POST", "/b/k?uploads", "", "s3:CreateMultipartUpload"},
		{"s3", "POST", "/b/k?uploadId=u", "", "s3:CompleteMultipartUpload"},
		{"s3", "DELETE", "/b/k?uploadId=u", "", "s3:AbortMultipartUpload"},
		{"s3", "GET", "/b/k?tagging&acl", "", ""},                           // two sub-resources
		{"s3", "GET", "/b/k?website", "", ""},                               // one not in the tables
		{"s3", "POST", "/b/k", "", ""},                                      // POST without a sub-resource
		{"s3", "GET", "/b/k", "X-Amz-Target: S3.PutObject", "s3:GetObject"}, // S3 reads no target
		{"dynamodb", "POST", "/", "X-Amz-Target: DynamoDB_20120810.GetItem", "dynamodb:GetItem"},
		{"sqs", "POST", "/?Action=SendMessage", "", "sqs:SendMessage"},
		{"sqs", "POST", "/?Action=SendMessage&Action=DeleteQueue", "", ""},
		{"sqs", "POST", "/?Action=SendMessage", "X-Amz-Target: AmazonSQS.DeleteQueue", ""},
		{"sqs", "POST", "/?Action=Send%20Message", "", ""},
		{"monitoring", "POST", "/?Action=ListMetrics&Operation=DeleteAlarms", "", ""},
		{"bedrock", "POST", "/model/anthropic.claude-3/converse", "", "bedrock:Converse"},
		{"bedrock", "POST", "/model/m/invoke-with-response-stream", "", "bedrock:InvokeModelWithResponseStream"},
		{"bedrock", "GET", "/model/m/invoke", "", ""},
		{"lambda", "POST", "/2015-03-31/functions/f/invocations", "", ""},
	} {
		u, _ := url.Parse(c.target)
		h := http.Header{}
		if c.header != "" {
			k, v, _ := cut(c.header)
			h.Set(k, v)
		}
		if got := Action(c.service, c.method, u.EscapedPath(), u.Query(), h, nil); got != c.want {
			t.Errorf("%s %s %s [%s]: %q, want %q", c.service, c.method, c.target, c.header, got, c.want)
		}
	}
	form := url.Values{"Action": {"ReceiveMessage"}}
	if got := Action("sqs", "POST", "/", url.Values{}, http.Header{}, form); got != "sqs:ReceiveMessage" {
		t.Errorf("form Action: %q", got)
	}
	if got := Action("sqs", "POST", "/", url.Values{}, http.Header{"X-Amz-Target": {"AmazonSQS.ReceiveMessage"}}, url.Values{"Action": {"DeleteQueue"}}); got != "" {
		t.Errorf("a target and a form Action: %q", got)
	}
	if got := CopySource(http.Header{"X-Amz-Copy-Source": {"/other/secret?versionId=1"}}); got != "/other/secret" {
		t.Errorf("copy source %q", got)
	}
}

func cut(h string) (string, string, bool) {
	for i := 0; i+1 < len(h); i++ {
		if h[i] == ':' && h[i+1] == ' ' {
			return h[:i], h[i+2:], true
		}
	}
	return h, "", false
}

func TestDeleteKeys(t *testing.T) {
	q, _ := url.ParseQuery("delete")
	bucket, ok := BatchDelete("POST", "/reports/", q)
	if !ok || bucket != "reports" {
		t.Fatalf("%q %v", bucket, ok)
	}
	if _, ok := BatchDelete("POST", "/reports/key", q); ok {
		t.Fatal("an object's POST read as a batch delete")
	}
	paths, err := DeleteKeys("reports", []byte(`<Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Object><Key>agent/a b.txt</Key></Object><Object><Key>secret/../x</Key><VersionId>1</VersionId></Object><Quiet>true</Quiet></Delete>`))
	if err != nil || len(paths) != 2 || paths[0] != "/reports/agent/a%20b.txt" || paths[1] != "/reports/secret/../x" {
		t.Fatalf("%v %v", paths, err)
	}
	for _, bad := range []string{"", "<Delete></Delete>", "<Delete><Object></Object></Delete>", "<Other/>", "not xml"} {
		if _, err := DeleteKeys("b", []byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}
