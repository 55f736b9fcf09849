package plugin

import (
	"bufio"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// TestUsableTokenRefusesEchoesOfWhatWasSent: a token endpoint that echoes
// what it was sent, in the encodings it went out in or in another, gives
// the engine a token it refuses; honest tokens, JWTs of the same issuer as
// a JWT refresh token included, are taken. (Found by an independent
// attack: the form body echoed with one byte before it.)
func TestUsableTokenRefusesEchoesOfWhatWasSent(t *testing.T) {
	rt, cs := "rt_orig/xyz+QQ=_0123456789", "cs-SECRET/abc+def=ghi_0123456789"
	body := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}}.Encode()
	basic := base64.StdEncoding.EncodeToString([]byte("cid:" + url.QueryEscape(cs)))
	secrets := []string{cs, rt}
	for name, tok := range map[string]string{
		"the form body":              "x" + body,
		"the Basic header in hex":    hex.EncodeToString([]byte(basic)),
		"the form body in base64":    base64.RawStdEncoding.EncodeToString([]byte("x" + body)),
		"the form body in base64url": base64.RawURLEncoding.EncodeToString([]byte("yz" + body)),
		"the secret in upper hex":    strings.ToUpper(hex.EncodeToString([]byte("--" + cs))),
		"the secret's middle":        "at_" + cs[5:25],
	} {
		if err := usableToken(tok, secrets); err == nil {
			t.Errorf("%s: taken as a token", name)
		}
	}

	jwtHeader := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"RS256","typ":"JWT","kid":"k1"}`))
	claims := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	jwtRefresh := jwtHeader + "." + claims(`{"sub":"agent","typ":"Refresh","sid":"0123456789abcdef"}`) + ".c2lnbmF0dXJlT0ZUSEVyZWZyZXNodG9rZW4wMTIzNDU2Nzg5"
	jwtAccess := jwtHeader + "." + claims(`{"sub":"agent","typ":"Bearer","sid":"0123456789abcdef"}`) + ".YW5vdGhlcnNpZ25hdHVyZWZvcnRoZWFjY2Vzc3Rva2VuMDE"
	for name, tok := range map[string]string{
		"a JWT of the issuer of a JWT refresh token": jwtAccess,
		"an opaque token": "ya29.a0AfH6SMBx8r2b1QmZkqLtV0aW3nJ7dXyPo",
	} {
		if err := usableToken(tok, []string{cs, jwtRefresh}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := usableToken("x"+jwtRefresh[strings.LastIndexByte(jwtRefresh, '.'):], []string{jwtRefresh}); err == nil {
		t.Error("a token holding a JWT refresh token's signature was taken")
	}
}

// TestTokenEndpointFailuresQuoteNothing: an endpoint that answers with a
// status line or header it filled with the form it got, or with an error
// code that is a secret, makes a refusal whose message, and the engine's
// log, hold neither the client secret nor the refresh token. (Found by an
// independent attack: Go quotes a malformed answer's line in its errors.)
func TestTokenEndpointFailuresQuoteNothing(t *testing.T) {
	const rt = "rt_lowercasesecretrefreshtokenabcdefgh"
	for _, answer := range []string{
		"HTTP/1.1 200 OK\r\n%s %s\r\n\r\n", // a header line without a colon
		"HTTP/1.1 2%s%s OK\r\n\r\n",        // a status code that is the request
		"HTTP/1.1 400 Bad\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{\"error\":\"%.0s%s\"}",
	} {
		addr := echoingEndpoint(t, answer)
		clock := &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
		e := newOAuth2Env(t, clock, &logical.InmemStorage{})
		e.writeOAuth2Route(t, "api", authOAuth2RefreshToken, "http://"+addr+"/token", map[string]any{"refresh_token": rt})
		tok, _ := e.mint(t, "api", nil)
		d := e.resolve(t, tok, "GET", "/v1/things", "")
		wantDenied(t, d, "credential_exchange_failed")
		for _, secret := range []string{rt, testClientSecret, url.QueryEscape(testClientSecret)} {
			if strings.Contains(d["message"].(string), secret) {
				t.Fatalf("%q: the refusal quotes a secret: %s", answer, d["message"])
			}
		}
		e.logHoldsNone(t, rt, testClientSecret, base64.StdEncoding.EncodeToString([]byte(testClientID+":"+testClientSecret)))
	}
}

// echoingEndpoint answers each request with answer, filled with the
// request's Authorization header and form body.
func echoingEndpoint(t *testing.T, answer string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			req, err := http.ReadRequest(bufio.NewReader(conn))
			if err == nil {
				req.ParseForm()
				fmt.Fprintf(conn, answer, req.Header.Get("Authorization"), req.PostForm.Encode())
			}
			conn.Close()
		}
	}()
	return ln.Addr().String()
}

// TestEarlierAccessTokenIsMaskedWhileItLives: after a refresh, the grant
// names the access token it replaced, to be masked, until that expires:
// an upstream that replays an earlier request's header must not hand the
// agent a token that still works. (Found by an independent attack.)
func TestEarlierAccessTokenIsMaskedWhileItLives(t *testing.T) {
	te := newTokenEndpoint(t)
	clock := &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	e := newOAuth2Env(t, clock, &logical.InmemStorage{})
	e.writeOAuth2Route(t, "api", authOAuth2ClientCredentials, te.URL, nil)
	tok, _ := e.mint(t, "api", nil)
	first := e.resolve(t, tok, "GET", "/v1/things", "")
	if first["mask"] != nil {
		t.Fatalf("the first token's grant masks %v", first["mask"])
	}
	clock.Advance(241 * time.Second) // past the refresh point, before the first token's end
	second := e.resolve(t, tok, "GET", "/v1/things", "")
	if second["credential"] == first["credential"] || fmt.Sprint(second["mask"]) != fmt.Sprint([]string{first["credential"].(string)}) {
		t.Fatalf("after a refresh: credential %v, mask %v", second["credential"], second["mask"])
	}
	clock.Advance(60 * time.Second) // the first token has expired
	if third := e.resolve(t, tok, "GET", "/v1/things", ""); third["mask"] != nil {
		t.Fatalf("an expired token is still masked: %v", third["mask"])
	}
}

// TestRotatedRefreshTokenKeptFromARefusedAnswer: an answer that rotates
// the refresh token but is refused (its access token holds a secret) still
// leaves the rotated refresh token stored, and the route recovers with it
// once the endpoint answers well. (Found by an independent attack.)
func TestRotatedRefreshTokenKeptFromARefusedAnswer(t *testing.T) {
	te := newTokenEndpoint(t)
	clock := &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	storage := &logical.InmemStorage{}
	e := newOAuth2Env(t, clock, storage)
	e.writeOAuth2Route(t, "api", authOAuth2RefreshToken, te.URL, nil)
	tok, _ := e.mint(t, "api", nil)
	te.set(func(te *tokenEndpoint) { te.mode = "rotecho" }) // rotates, and answers the new one as the access token
	wantDenied(t, e.resolve(t, tok, "GET", "/v1/things", ""), "credential_exchange_failed")
	if rec := storedExchange(t, storage, "api"); rec.RefreshToken != te.validRT || rec.AccessToken != "" {
		t.Fatalf("stored after the refused answer: refresh %q, access %q", rec.RefreshToken, rec.AccessToken)
	}
	te.set(func(te *tokenEndpoint) { te.mode = "" })
	clock.Advance(exchangeBackoff)
	wantAllowed(t, e.resolve(t, tok, "GET", "/v1/things", ""))
}

// TestGitHubAppInstallationTokenCannotBeRevoked: DELETE /installation/token
// would revoke the installation token every token of the route shares; it
// is refused even where the route's scope allows it. (Found by an
// independent attack.)
func TestGitHubAppInstallationTokenCannotBeRevoked(t *testing.T) {
	gh := newGitHubStandIn(t)
	e := newOAuth2Env(t, &fakeClock{now: time.Now()}, &logical.InmemStorage{})
	route := githubAppRoute(gh.URL)
	route["allowed_paths"], route["allowed_methods"] = "/**", "GET,DELETE"
	e.ok(t, logical.UpdateOperation, "routes/gh", route)
	tok, _ := e.mint(t, "gh", nil)
	for _, path := range []string{"/installation/token", "/installation/token/", "/Installation/Token"} {
		wantDenied(t, e.resolve(t, tok, "DELETE", path, ""), "path_not_allowed")
	}
	wantAllowed(t, e.resolve(t, tok, "DELETE", "/repos/o/r/issues/1/labels/x", ""))
	wantAllowed(t, e.resolve(t, tok, "GET", "/installation/repositories", ""))
}
