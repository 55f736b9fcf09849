package plugin

import (
	"fmt"
	"strings"

	"github.com/phantomvault/phantom/internal/resolve"
)

// resolveHelp is the path's help, written from the contract's definitions
// (internal/resolve): field names, batch size, placeholder, auth types and
// deny reasons. The answer's fields are resolve.Answer and resolve.RouteGrant.
func resolveHelp() string {
	input := fmt.Sprintf("Input: %s, %s (upper-case letters only), %s (exactly the bytes that will be "+
		"forwarded, without the query), %s, for a route of auth_type %s, %s (its API operations, such as "+
		"s3:GetObject, checked against allowed_actions) and, for a route of auth_type %s, %s (query, body or "+
		"body_sha256: what the signature covers that only the proxy knows). Or %s, a list of up to %d objects with those fields, "+
		"answered by results, the decisions in the same order, and routes, the grant (upstream through "+
		"headers below) of each route allowed, once; a batch reads each route once. phantom-proxy calls "+
		"with PATCH (an update needs an extra round trip to the plugin) and batches the requests that "+
		"queue up while a call is in flight. The answer is always data, never an error:",
		resolve.FieldToken, resolve.FieldMethod, resolve.FieldPath, resolve.FieldClientIP, resolve.AuthAWSSigV4, resolve.FieldAction,
		resolve.AuthHMAC, resolve.FieldHMAC,
		resolve.FieldRequests, resolve.MaxBatch)
	allowed := fmt.Sprintf("route, accessor, upstream, credential, auth_type (%s), auth_name (header "+
		"or query parameter), auth_format (a template around %s), headers (static upstream headers), "+
		"expires_at, uses_remaining (tokens with num_uses), limits (usage_format, allowed_models, "+
		"max_output_tokens, budget_remaining: what the proxy enforces on this request, when any apply); "+
		"for auth_type %s the credential is the SigV4 signing key of one day (hex), never the secret access key, "+
		"and aws says how to sign (access_key_id, region, service, date, session_token); "+
		"for auth_type %s no credential but hmac (where the signature, timestamp, key id and passphrase go) and "+
		"hmac_signature (this request's timestamp and signature, never shared by a batch)",
		strings.Join([]string{resolve.AuthBearer, resolve.AuthHeader, resolve.AuthBasic, resolve.AuthQuery, resolve.AuthAWSSigV4, resolve.AuthHMAC}, ", "),
		resolve.Placeholder, resolve.AuthAWSSigV4, resolve.AuthHMAC)
	denied := "reason, one of: " + strings.Join(resolve.Reasons(), ", ") +
		"; message; accessor and route when the token is known; retry_after_ms with rate_limited and budget_pending; " +
		"hmac_needs with " + resolve.ReasonHMACInputs + " (what of the body to send with hmac, and at most how much)"
	indent := "\n" + strings.Repeat(" ", 17)
	return "phantom-proxy calls this for every request: may this token make this request?\n\n" +
		wrapWords(input, 78, "\n") + "\n\n" +
		"  allowed=true   " + wrapWords(allowed, 61, indent) + "\n" +
		"  allowed=false  " + wrapWords(denied, 61, indent) + "\n\n" +
		wrapWords("Resolve writes storage only for tokens with num_uses, whose count is exact under any "+
			"concurrency; other usage counters are kept in memory and flushed periodically. Grant this "+
			"path only to the proxy's policy: it returns the real credential. Vault's audit devices HMAC "+
			"every field.", 78, "\n")
}

// wrapWords breaks s at spaces into lines of at most width bytes, joined by sep.
func wrapWords(s string, width int, sep string) string {
	var lines []string
	line := ""
	for word := range strings.FieldsSeq(s) {
		if line != "" && len(line)+1+len(word) > width {
			lines = append(lines, line)
			line = ""
		}
		if line != "" {
			line += " "
		}
		line += word
	}
	return strings.Join(append(lines, line), sep)
}
