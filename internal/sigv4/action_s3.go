package sigv4

import (
	"net/http"
	"net/url"
	"strings"
)

// S3 names an operation by method, by whether the path-style path names a
// bucket or an object, and by a sub-resource query parameter. Operations
// outside these tables are "" (refused under allowed_actions), and so is a
// request with a query parameter S3 might read as another sub-resource.

// s3Params are the query parameters that select nothing by themselves.
var s3Params = map[string]bool{
	"list-type": true, "prefix": true, "delimiter": true, "max-keys": true, "continuation-token": true,
	"start-after": true, "fetch-owner": true, "encoding-type": true, "marker": true, "x-id": true,
	"versionId": true, "partNumber": true, "uploadId": true, "key-marker": true, "version-id-marker": true,
	"upload-id-marker": true, "max-uploads": true, "max-parts": true, "part-number-marker": true,
	"max-buckets": true, "bucket-region": true, "x-amz-checksum-mode": true,
	"response-cache-control": true, "response-content-disposition": true, "response-content-encoding": true,
	"response-content-language": true, "response-content-type": true, "response-expires": true,
}

// s3Ops maps level ("service", "bucket", "object"), method and
// sub-resource ("" for none) to an operation.
var s3Ops = map[string]string{
	"service GET ": "ListBuckets",

	"bucket GET ":              "ListObjects",
	"bucket GET versions":      "ListObjectVersions",
	"bucket GET uploads":       "ListMultipartUploads",
	"bucket GET location":      "GetBucketLocation",
	"bucket GET acl":           "GetBucketAcl",
	"bucket GET policy":        "GetBucketPolicy",
	"bucket GET tagging":       "GetBucketTagging",
	"bucket GET versioning":    "GetBucketVersioning",
	"bucket GET cors":          "GetBucketCors",
	"bucket GET lifecycle":     "GetBucketLifecycleConfiguration",
	"bucket GET encryption":    "GetBucketEncryption",
	"bucket HEAD ":             "HeadBucket",
	"bucket PUT ":              "CreateBucket",
	"bucket PUT acl":           "PutBucketAcl",
	"bucket PUT policy":        "PutBucketPolicy",
	"bucket PUT tagging":       "PutBucketTagging",
	"bucket PUT versioning":    "PutBucketVersioning",
	"bucket PUT cors":          "PutBucketCors",
	"bucket PUT lifecycle":     "PutBucketLifecycleConfiguration",
	"bucket PUT encryption":    "PutBucketEncryption",
	"bucket DELETE ":           "DeleteBucket",
	"bucket DELETE policy":     "DeleteBucketPolicy",
	"bucket DELETE tagging":    "DeleteBucketTagging",
	"bucket DELETE cors":       "DeleteBucketCors",
	"bucket DELETE lifecycle":  "DeleteBucketLifecycle",
	"bucket DELETE encryption": "DeleteBucketEncryption",
	"bucket POST delete":       "DeleteObjects",

	"object GET ":           "GetObject",
	"object GET acl":        "GetObjectAcl",
	"object GET tagging":    "GetObjectTagging",
	"object GET attributes": "GetObjectAttributes",
	"object GET retention":  "GetObjectRetention",
	"object GET legal-hold": "GetObjectLegalHold",
	"object GET torrent":    "GetObjectTorrent",
	"object HEAD ":          "HeadObject",
	"object PUT ":           "PutObject",
	"object PUT acl":        "PutObjectAcl",
	"object PUT tagging":    "PutObjectTagging",
	"object PUT retention":  "PutObjectRetention",
	"object PUT legal-hold": "PutObjectLegalHold",
	"object POST uploads":   "CreateMultipartUpload",
	"object POST ":          "CompleteMultipartUpload", // with uploadId, checked below
	"object POST restore":   "RestoreObject",
	"object POST select":    "SelectObjectContent",
	"object DELETE ":        "DeleteObject",
	"object DELETE tagging": "DeleteObjectTagging",
}

func s3Action(method, path string, query url.Values, header http.Header) string {
	sub := ""
	for k := range query {
		if s3Params[k] || s3Params[strings.ToLower(k)] || IsPresignParam(k) {
			continue
		}
		if sub != "" || s3Ops["bucket GET "+k] == "" && s3Ops["object GET "+k] == "" &&
			s3Ops["object POST "+k] == "" && s3Ops["bucket POST "+k] == "" {
			return "" // two sub-resources, or one not in the tables
		}
		sub = k
	}
	level := s3Level(path)
	op := s3Ops[level+" "+method+" "+sub]
	_, upload := query["uploadId"]
	copied := header.Get("X-Amz-Copy-Source") != ""
	switch {
	case op == "":
		return ""
	case level == "bucket" && op == "ListObjects" && query.Get("list-type") == "2":
		return "ListObjectsV2"
	case level != "object" || sub != "":
		if upload || copied {
			return ""
		}
		return op
	}
	switch method + " " + map[bool]string{true: "upload"}[upload] {
	case "PUT upload":
		if copied {
			return "UploadPartCopy"
		}
		return "UploadPart"
	case "PUT ":
		if copied {
			return "CopyObject"
		}
		return "PutObject"
	case "GET upload":
		return "ListParts"
	case "POST upload":
		return "CompleteMultipartUpload"
	case "DELETE upload":
		return "AbortMultipartUpload"
	case "POST ":
		return "" // POST on an object names its operation with a sub-resource
	}
	if copied {
		return ""
	}
	return op
}

// s3Level is what a path-style path names: the service ("/"), a bucket
// ("/b", "/b/") or an object ("/b/key...").
func s3Level(path string) string {
	rest := strings.TrimPrefix(path, "/")
	bucket, key, _ := strings.Cut(rest, "/")
	switch {
	case bucket == "":
		return "service"
	case key == "":
		return "bucket"
	}
	return "object"
}

// s3HeaderActions are the operations beside op that an S3 request's headers
// perform, as IAM counts them: an ACL or grants (PutObjectAcl, or
// PutBucketAcl on a bucket), tags (PutObjectTagging), an object lock
// (PutObjectRetention, PutObjectLegalHold), a governance bypass.
func s3HeaderActions(op string, header http.Header) []string {
	var extra []string
	acl := header.Get("X-Amz-Acl") != ""
	for name := range header {
		acl = acl || strings.HasPrefix(name, "X-Amz-Grant-")
	}
	switch {
	case acl && (op == "CreateBucket" || op == "PutBucketAcl"):
		extra = append(extra, "PutBucketAcl")
	case acl:
		extra = append(extra, "PutObjectAcl")
	}
	if header.Get("X-Amz-Tagging") != "" {
		extra = append(extra, "PutObjectTagging")
	}
	if header.Get("X-Amz-Object-Lock-Mode") != "" || header.Get("X-Amz-Object-Lock-Retain-Until-Date") != "" {
		extra = append(extra, "PutObjectRetention")
	}
	if header.Get("X-Amz-Object-Lock-Legal-Hold") != "" {
		extra = append(extra, "PutObjectLegalHold")
	}
	if header.Get("X-Amz-Bypass-Governance-Retention") != "" {
		extra = append(extra, "BypassGovernanceRetention")
	}
	return extra
}

// CopySource is the object an S3 copy reads (x-amz-copy-source:
// "bucket/key" or "/bucket/key", a version id after '?'), as a path-style
// path to check against the token's scope, or "" when the request copies
// nothing.
func CopySource(header http.Header) string {
	v := header.Get("X-Amz-Copy-Source")
	if v == "" {
		return ""
	}
	v, _, _ = strings.Cut(v, "?")
	return "/" + strings.TrimPrefix(v, "/")
}
