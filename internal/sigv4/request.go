package sigv4

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
)

// unsignedHeaders are left out of the signature, as the AWS SDKs leave
// them: set or changed on the way by clients, proxies and transports.
var unsignedHeaders = map[string]bool{
	"authorization": true, "user-agent": true, "x-amzn-trace-id": true, "expect": true,
	"transfer-encoding": true, "connection": true, "content-length": true,
}

// SignRequest signs out, the request exactly as it will be sent, with a
// payload hash: it sets X-Amz-Date, X-Amz-Security-Token when sessionToken
// is set (and removes any other), and Authorization over every header out
// carries but those AWS leaves unsigned. It returns the signature, the seed
// of a streaming body's chunk signatures. escapePath is false for S3, whose
// canonical path is the path as sent, and true for every other service,
// whose path is escaped once more.
func (s *Signer) SignRequest(out *http.Request, amzDate, payloadHash, sessionToken string, escapePath bool) (string, error) {
	query, err := canonicalQuery(out.URL.RawQuery)
	if err != nil {
		return "", err
	}
	out.Header.Del("Authorization")
	out.Header.Set("X-Amz-Date", amzDate)
	out.Header.Del("X-Amz-Security-Token")
	if sessionToken != "" {
		out.Header.Set("X-Amz-Security-Token", sessionToken)
	}
	path := out.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	if escapePath {
		path = escape(path, true)
	}
	headers, signed := canonicalHeaders(out)
	canonical := out.Method + "\n" + path + "\n" + query + "\n" + headers + "\n" + signed + "\n" + payloadHash
	signature := s.Sign(amzDate, canonical)
	out.Header.Set("Authorization", s.Authorization(signed, signature))
	return signature, nil
}

// canonicalHeaders are the canonical header block (each "name:value\n")
// and the signed header list of out.
func canonicalHeaders(out *http.Request) (block, signed string) {
	host := out.Host
	if host == "" {
		host = out.URL.Host
	}
	values := map[string]string{"host": trimAll(host)}
	if out.ContentLength > 0 {
		values["content-length"] = itoa(out.ContentLength)
	}
	for name, vs := range out.Header {
		lower := strings.ToLower(name)
		if unsignedHeaders[lower] || lower == "host" {
			continue
		}
		trimmed := make([]string, len(vs))
		for i, v := range vs {
			trimmed[i] = trimAll(v)
		}
		values[lower] = strings.Join(trimmed, ",")
	}
	names := make([]string, 0, len(values))
	for n := range values {
		names = append(names, n)
	}
	slices.Sort(names)
	var b strings.Builder
	for _, n := range names {
		b.WriteString(n + ":" + values[n] + "\n")
	}
	return b.String(), strings.Join(names, ";")
}

var errQuery = errors.New("the query is not valid percent-encoding, so it cannot be signed")

// canonicalQuery is the query's canonical form: pairs sorted by name and
// value, each escaped the way SigV4 wants.
func canonicalQuery(raw string) (string, error) {
	if raw == "" {
		return "", nil
	}
	type pair struct{ k, v string }
	var pairs []pair
	for part := range strings.SplitSeq(raw, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		key, err1 := url.QueryUnescape(k)
		val, err2 := url.QueryUnescape(v)
		if err1 != nil || err2 != nil {
			return "", errQuery
		}
		pairs = append(pairs, pair{escape(key, false), escape(val, false)})
	}
	slices.SortFunc(pairs, func(a, b pair) int {
		if c := strings.Compare(a.k, b.k); c != 0 {
			return c
		}
		return strings.Compare(a.v, b.v)
	})
	parts := make([]string, len(pairs))
	for i, p := range pairs {
		parts[i] = p.k + "=" + p.v
	}
	return strings.Join(parts, "&"), nil
}

// escape percent-encodes every byte but the unreserved ones (and '/' when
// keepSlash), in upper-case hex.
func escape(s string, keepSlash bool) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' ||
			c == '-' || c == '_' || c == '.' || c == '~' || c == '/' && keepSlash {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&15])
	}
	return b.String()
}

func itoa(n int64) string {
	if n == 0 {
		return "0"
	}
	var buf [20]byte
	i := len(buf)
	for ; n > 0; n /= 10 {
		i--
		buf[i] = byte('0' + n%10)
	}
	return string(buf[i:])
}
