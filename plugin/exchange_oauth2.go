package plugin

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The OAuth2 exchangers: a POST of a form to token_url (RFC 6749 §4.4,
// §6), the client authenticated by HTTP Basic (§2.3.1), a JSON answer
// (§5.1, errors §5.2).

// maxTokenAnswer bounds what is read of an endpoint's answer.
const maxTokenAnswer = 64 << 10

// minAccessTokenLen: an access token is masked wherever it appears in a
// response, so a very short one would mask ordinary text.
const minAccessTokenLen = 8

type oauth2ClientCredentials struct{}

func (oauth2ClientCredentials) exchange(ctx context.Context, c *http.Client, r *routeEntry, _ string) (*exchanged, error) {
	form := url.Values{"grant_type": {"client_credentials"}}
	if a := r.OAuth2.Audience; a != "" {
		form.Set("audience", a)
	}
	return oauth2Post(ctx, c, r.OAuth2, form)
}

type oauth2Refresh struct{}

func (oauth2Refresh) exchange(ctx context.Context, c *http.Client, r *routeEntry, refreshToken string) (*exchanged, error) {
	form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refreshToken}}
	if a := r.OAuth2.Audience; a != "" {
		form.Set("audience", a)
	}
	return oauth2Post(ctx, c, r.OAuth2, form)
}

// oauth2Post asks o's token endpoint for a token with form. Its errors
// never carry the endpoint's words beyond an RFC 6749 error code: an
// endpoint may quote what it received, secrets included.
func oauth2Post(ctx context.Context, c *http.Client, o *oauth2Settings, form url.Values) (*exchanged, error) {
	if len(o.Scopes) > 0 {
		form.Set("scope", strings.Join(o.Scopes, " "))
	}
	if o.ClientSecret == "" {
		form.Set("client_id", o.ClientID) // a public client (§3.2.1)
	}
	req, err := tokenRequest(ctx, o.TokenURL, form)
	if err != nil {
		return nil, errors.New("token_url is not a usable URL")
	}
	if o.ClientSecret != "" {
		req.SetBasicAuth(url.QueryEscape(o.ClientID), url.QueryEscape(o.ClientSecret))
	}
	out, err := tokenAnswer(callTokenEndpoint(c, req))
	if out == nil {
		return nil, err
	}
	sent := form.Get("refresh_token")
	if out.RefreshToken == sent {
		out.RefreshToken = "" // the same one back: not rotated
	}
	client := []string{o.ClientSecret}
	if out.RefreshToken != "" {
		if err := usableToken(out.RefreshToken, client); err != nil {
			return nil, &errExchange{"the token endpoint's refresh_token " + err.Error()}
		}
	}
	// The access token, the one the proxy gets, holds no secret at all:
	// not the client secret, the route's refresh token, the one sent, or
	// the one rotated to.
	if err == nil {
		if err = usableToken(out.AccessToken, append(client, o.RefreshToken, sent, out.RefreshToken)); err != nil {
			err = &errExchange{"the token endpoint's access_token " + err.Error()}
		}
	}
	if err != nil {
		// A rotated refresh token is kept even so: the endpoint may have
		// invalidated the one sent.
		return &exchanged{RefreshToken: out.RefreshToken}, err
	}
	return out, nil
}

// tokenRequest is a POST of form to a token endpoint, asking for JSON.
func tokenRequest(ctx context.Context, endpoint string, form url.Values) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	return req, nil
}

// tokenAnswer reads what callTokenEndpoint got: a JSON token answer (RFC
// 6749 §5.1) of a bearer token, or an error (§5.2) of which only the code
// is repeated. An answer that is JSON but not usable comes back with its
// error, for the refresh token it may hold.
func tokenAnswer(status int, body []byte, err error) (*exchanged, error) {
	switch {
	case err != nil:
		return nil, err
	case status != http.StatusOK:
		return nil, &errExchange{fmt.Sprintf("the token endpoint answered %d%s", status, oauth2ErrorCode(body))}
	}
	var answer struct {
		AccessToken  string          `json:"access_token"`
		TokenType    string          `json:"token_type"`
		ExpiresIn    json.RawMessage `json:"expires_in"`
		RefreshToken string          `json:"refresh_token"`
	}
	if err := json.Unmarshal(body, &answer); err != nil {
		return nil, &errExchange{"the token endpoint's answer is not a JSON token answer"}
	}
	out := &exchanged{AccessToken: answer.AccessToken, RefreshToken: answer.RefreshToken}
	if out.Lifetime, err = expiresIn(answer.ExpiresIn); err != nil {
		return out, err
	}
	if t := answer.TokenType; t != "" && !strings.EqualFold(t, "bearer") {
		return out, &errExchange{"the token endpoint issued a token that is not a bearer token"}
	}
	return out, nil
}

// expiresIn reads expires_in, a number of seconds (some endpoints send it
// as a string); absent is 0.
func expiresIn(raw json.RawMessage) (time.Duration, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, nil
	}
	s := strings.Trim(string(raw), `"`)
	n, err := strconv.ParseFloat(s, 64)
	if err != nil || n < 0 || n > 1e9 {
		return 0, &errExchange{"the token endpoint's expires_in is not a number of seconds"}
	}
	return time.Duration(n * float64(time.Second)), nil
}

// oauth2ErrorCodes are the error codes of RFC 6749 §5.2 (and of the
// extensions token endpoints use) that a failure repeats. Any other code
// is not repeated: an endpoint can put a secret it was sent in that field.
var oauth2ErrorCodes = map[string]bool{
	"invalid_request": true, "invalid_client": true, "invalid_grant": true, "unauthorized_client": true,
	"unsupported_grant_type": true, "invalid_scope": true, "access_denied": true, "server_error": true,
	"temporarily_unavailable": true, "invalid_target": true, "consent_required": true,
	"interaction_required": true, "invalid_token": true, "expired_token": true,
}

// oauth2ErrorCode is " (<error>)" for an RFC 6749 §5.2 error answer whose
// code is one of oauth2ErrorCodes, else "": nothing else of the answer is
// repeated.
func oauth2ErrorCode(body []byte) string {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil || !oauth2ErrorCodes[e.Error] {
		return ""
	}
	return " (" + e.Error + ")"
}

// transportError names what kind of failure a call met, never its text:
// Go quotes a malformed answer's line (a status line or header that an
// endpoint filled with the form it was sent) in its errors.
func transportError(err error) string {
	var dns *net.DNSError
	var tlsRecord tls.RecordHeaderError
	var tlsVerify *tls.CertificateVerificationError
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "the connection was refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "the connection was closed before an answer"
	case errors.As(err, &dns):
		return "its host name does not resolve"
	case errors.As(err, &tlsRecord), errors.As(err, &tlsVerify), errors.As(err, &unknownCA), errors.As(err, &hostname):
		return "TLS failed (its certificate, or not TLS at all)"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "it timed out"
	}
	return "its answer was not HTTP that could be read"
}

// callTokenEndpoint sends req and reads the answer, at most maxTokenAnswer
// bytes. Its errors are *errExchange and quote nothing the endpoint said.
func callTokenEndpoint(c *http.Client, req *http.Request) (status int, body []byte, err error) {
	resp, err := c.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return 0, nil, &errExchange{"the token endpoint did not answer in time"}
		}
		return 0, nil, &errExchange{"the token endpoint could not be reached: " + transportError(err)}
	}
	defer resp.Body.Close()
	body, err = io.ReadAll(io.LimitReader(resp.Body, maxTokenAnswer+1))
	switch {
	case err != nil:
		return 0, nil, &errExchange{"the token endpoint's answer broke off"}
	case len(body) > maxTokenAnswer:
		return 0, nil, &errExchange{"the token endpoint's answer is too large"}
	}
	return resp.StatusCode, body, nil
}
