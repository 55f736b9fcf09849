package plugin

// routeHelp is the help of phantom/routes/<name> (vault path-help).
const routeHelp = `
A route is one upstream API, the scope phantom tokens may use there, and the
real credential phantom-proxy injects. For example:

  vault write phantom/routes/stripe-customers \
      upstream=https://api.stripe.com \
      allowed_paths="/v1/customers/**" \
      allowed_methods=GET \
      credential=sk_live_...

The credential is write-only: reads return credential_fingerprint, the first
12 hex digits of its SHA-256, so admins can tell which key is set. Writing a new
credential rotates it for every live token at once: the next request uses it.

The credential is bound to where and how it is sent. An update that changes
upstream (its scheme, host, port or path prefix), auth_type, auth_header,
auth_query_param, auth_format or headers, or turns allow_http on, is refused
unless it carries credential again: whoever may update a route but does not
know its key cannot send that key somewhere new. Scope, token settings and
limits (allowed_paths, allowed_methods, ttl, max_ttl, num_uses, bound_cidrs,
token_prefix, and the limits below) change without it. On a shared host where the path picks the
tenant, put the tenant part in upstream, which is bound, not in allowed_paths.

allowed_paths are matched byte for byte against the request path: "*" matches
one segment, "**" (only as the last segment) matches zero or more segments.
Paths with dot segments, "//", or encoded "/", "\", "." or NUL never match.

Injection (auth_type): bearer sends "Authorization: Bearer <credential>";
header sends auth_header with auth_format (for example auth_header=x-api-key,
or auth_header=Authorization auth_format="Token {{credential}}"); basic sends
HTTP basic auth of auth_format (default "{{credential}}:", key as user name);
query adds auth_query_param=<credential> to the URL.

hmac: the engine signs each request with the credential, which never leaves
Vault. hmac_message is what is signed: {timestamp} {method} {path} {query}
{path_query} {body} {body_sha256} {key_id}, \n a newline, \\ \{ \} literal;
the engine fills in the method and path it authorized and its own clock, the
proxy only the forwarded query and the body (or its hash). hmac_hash
(sha256, sha512), hmac_encoding (hex, base64), hmac_secret_encoding (raw,
base64); the signature goes in hmac_signature_header or hmac_signature_query
(appended last), the timestamp in hmac_timestamp_header or
hmac_timestamp_query (hmac_timestamp_format unix, unix_ms, rfc3339).
hmac_key_id and hmac_passphrase are write-only, sent in hmac_key_id_header and
hmac_passphrase_header, masked in responses. hmac_max_body bounds a signed
body (413 above). Every hmac_* setting but hmac_max_body is bound like the
credential. Binance:

  vault write phantom/routes/binance upstream=https://api.binance.com ... \
      auth_type=hmac credential=... hmac_message='{query}{body}' \
      hmac_signature_query=signature hmac_timestamp_query=timestamp \
      hmac_timestamp_format=unix_ms hmac_key_id=... hmac_key_id_header=X-MBX-APIKEY

aws_sigv4: the engine keeps secret_access_key and hands the proxy only the
day's signing key for region and service; allowed_actions (s3:GetObject,
bedrock:InvokeModel, ...) scope tokens by AWS action. See docs/aws.md.

Exchanged kinds keep a long-lived secret in Vault; the engine trades it for
short-lived access tokens, once for all proxies, and the proxy gets only
those, sent as Authorization: Bearer: oauth2_client_credentials and
oauth2_refresh_token (token_url, client_id, client_secret, refresh_token,
scopes, audience), github_app (app_id, installation_id, private_key,
github_api_url, repositories, permissions; send_as=basic for git over
HTTPS) and google_service_account (service_account_key, the JSON key file's
content; scopes; subject for domain-wide delegation):

  vault write phantom/routes/gcs upstream=https://storage.googleapis.com ... \
      auth_type=google_service_account service_account_key=@key.json \
      scopes=https://www.googleapis.com/auth/devstorage.read_only

Their secrets are write-only (reads show fingerprints) and bound like the
credential, and so is what decides where they go or what the tokens may do:
token_url, client_id, scopes, audience, app_id, installation_id,
github_api_url, repositories, permissions, subject, and the key's token_uri
and client_email, and github_app's send_as. A failing endpoint is a 502
credential_exchange_failed. See docs/oauth2.md and docs/github.md.

Token defaults: ttl, max_ttl, num_uses, bound_cidrs and token_prefix apply to
every token minted from the route; a mint request may narrow them, never widen.
max_ttl bounds how long a token may live, renewals included (default: the
engine's max_ttl, 24h unless configured). A token's own bound is fixed when it
is minted; lowering max_ttl also bounds renewals of live tokens, raising it
never extends them.

Limits bound what a token, even a stolen one, can cost:

  vault write phantom/routes/openai ... usage_format=openai \
      rate_limit=60/1m route_rate_limit=3000/1m \
      token_budget=200000 max_output_tokens=4096 allowed_models="gpt-4o-mini,gpt-4.1-*"

rate_limit is per token and route_rate_limit for all the route's tokens
together, as N/DURATION (bursts of N, refilled at N per duration; the
duration from 1s to 24h). Over a limit the agent gets 429 with Retry-After.
They are decided by the engine on Vault's active node, in memory, so they hold
across any number of proxies; after a leader failover they start afresh.
token_budget (LLM tokens, input plus output, as the upstream reports them)
is each token's default and ceiling, fixed at mint; it needs
max_output_tokens, and each request in flight reserves its cap of the budget
until its usage is reported (429 budget_pending meanwhile); a token that
spent it is dead (budget_exhausted). max_output_tokens caps each request and bounds the
overshoot of requests in flight when a budget runs out. allowed_models are
globs (* is any run of characters). The last three need usage_format
(openai, anthropic or gemini), which tells the proxy how to read usage and
find the model. A mint may narrow every limit, never widen it; a route's
current limits always apply as well, so lowering one bites at once.

Reads show the limits, route_rate_limit_remaining (requests the route's
tokens could make at once now), and usage: the totals (requests,
input_tokens, output_tokens, estimated_responses) of every token of the
route.

Deleting a route kills its tokens on their next use, even if a route of the
same name is created again.
`
