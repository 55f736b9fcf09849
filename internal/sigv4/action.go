package sigv4

import (
	"net/http"
	"net/url"
	"strings"
)

// Action is the API operation a request calls, as "<service>:<Operation>"
// (s3:GetObject, dynamodb:GetItem), or "" when it cannot be told: such a
// request is refused wherever allowed_actions apply. service is the one the
// request is signed for. form is a url-encoded body's fields (the query
// protocol's Action), nil for any other body.
//
// An S3 request whose headers do more than its operation (an ACL, tags or
// an object lock set with the upload, a governance bypass), for which IAM
// wants further permissions, names those operations too, after commas: the
// engine then wants every one allowed.
//
// Where the operation is named (X-Amz-Target for JSON protocols, Action for
// query ones) the name is taken; S3 and Bedrock name it by method, path and
// query, read here from the same bytes the proxy forwards. Anything
// ambiguous is "".
func Action(service, method, path string, query url.Values, header http.Header, form url.Values) string {
	var op string
	switch {
	case NamesActions(service):
		op = namedAction(query, header, form)
	case service == "bedrock":
		op = bedrockAction(method, path)
	default:
		op = s3Action(method, path, query, header)
	}
	if op == "" || !isOperationName(op) {
		return ""
	}
	action := service + ":" + op
	if strings.HasPrefix(service, "s3") {
		for _, extra := range s3HeaderActions(op, header) {
			action += "," + service + ":" + extra
		}
	}
	return action
}

// NamesActions reports whether service's requests name their operation (in
// X-Amz-Target, or an Action of the URL or a form body), rather than
// through the method and path (S3, Bedrock runtime).
func NamesActions(service string) bool {
	return !strings.HasPrefix(service, "s3") && service != "bedrock"
}

// namedAction is the operation a JSON (X-Amz-Target: "DynamoDB_20120810.GetItem")
// or query (Action=SendMessage, or CloudWatch's older Operation=) protocol
// request names, if it names exactly one.
func namedAction(query url.Values, header http.Header, form url.Values) string {
	var names []string
	for _, t := range header.Values("X-Amz-Target") {
		_, op, _ := strings.Cut(t, ".")
		names = append(names, op)
	}
	for _, key := range []string{"Action", "Operation"} {
		names = append(append(names, query[key]...), form[key]...)
	}
	if len(names) != 1 {
		return ""
	}
	return names[0]
}

func isOperationName(op string) bool {
	for i := 0; i < len(op); i++ {
		if c := op[i]; !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9') {
			return false
		}
	}
	return len(op) <= 128
}

// bedrockAction reads bedrock-runtime's REST paths: /model/{id}/<op>.
func bedrockAction(method, path string) string {
	segs := strings.Split(strings.TrimPrefix(path, "/"), "/")
	if method != http.MethodPost || len(segs) != 3 || segs[0] != "model" || segs[1] == "" {
		return ""
	}
	return map[string]string{
		"invoke":                      "InvokeModel",
		"invoke-with-response-stream": "InvokeModelWithResponseStream",
		"converse":                    "Converse",
		"converse-stream":             "ConverseStream",
	}[segs[2]]
}
