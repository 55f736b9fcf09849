package plugin

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// jwtBearerGrant is the grant of RFC 7523 §2.1, which Google's token
// endpoint takes from service accounts.
const jwtBearerGrant = "urn:ietf:params:oauth:grant-type:jwt-bearer"

// googleServiceAccount gets a Google access token: a JWT (RS256, signed
// with the service account's private key, naming the route's scopes) is
// POSTed to the key's token_uri as an assertion.
type googleServiceAccount struct{}

func (googleServiceAccount) exchange(ctx context.Context, c *http.Client, r *routeEntry, _ string) (*exchanged, error) {
	g := r.Google
	k, key, err := parseGoogleKey(g.Key)
	if err != nil {
		return nil, &errExchange{err.Error()}
	}
	now := time.Now() // Google's clock, not the engine's test clock
	claims := map[string]any{
		"iss": g.ClientEmail, "scope": strings.Join(g.Scopes, " "), "aud": g.TokenURI,
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), // an hour at most
	}
	if g.Subject != "" {
		claims["sub"] = g.Subject
	}
	jwt, err := signJWT(key, k.PrivateKeyID, claims)
	if err != nil {
		return nil, &errExchange{"signing the service account's JWT failed"}
	}
	req, err := tokenRequest(ctx, g.TokenURI, url.Values{"grant_type": {jwtBearerGrant}, "assertion": {jwt}})
	if err != nil {
		return nil, errors.New("token_uri is not a usable URL")
	}
	out, err := tokenAnswer(callTokenEndpoint(c, req)) // exchange_oauth2.go
	if err != nil {
		return nil, err
	}
	out.RefreshToken = "" // the grant has none; nothing is kept but the access token
	// The access token holds neither the key file, the private key (as
	// PEM or its bytes) nor the JWT signed with it.
	if err := usableToken(out.AccessToken, jwtSecrets(k.PrivateKey, jwt)); err != nil {
		return nil, &errExchange{"the token endpoint's access_token " + err.Error()}
	}
	return out, nil
}
