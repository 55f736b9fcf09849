package plugin

import (
	"bytes"
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// githubApp gets a GitHub App installation token: a JWT (RS256, signed with
// the App's private key) is POSTed to the installation's access_tokens
// endpoint, narrowed to the route's repositories and permissions.
type githubApp struct{}

func (githubApp) exchange(ctx context.Context, c *http.Client, r *routeEntry, _ string) (*exchanged, error) {
	g := r.GitHubApp
	key, err := parseRSAKey(g.PrivateKey)
	if err != nil {
		return nil, &errExchange{err.Error()}
	}
	now := time.Now() // GitHub's clock, not the engine's test clock
	jwt, err := githubAppJWT(key, g.AppID, now)
	if err != nil {
		return nil, &errExchange{"signing the GitHub App JWT failed"}
	}
	body := map[string]any{}
	if len(g.Repositories) > 0 {
		body["repositories"] = g.Repositories
	}
	if len(g.Permissions) > 0 {
		body["permissions"] = g.Permissions
	}
	raw, _ := json.Marshal(body)
	endpoint := g.APIURL + "/app/installations/" + url.PathEscape(g.InstallationID) + "/access_tokens"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(raw))
	if err != nil {
		return nil, errors.New("github_api_url is not a usable URL")
	}
	req.Header.Set("Authorization", "Bearer "+jwt)
	req.Header.Set("Accept", "application/vnd.github+json")
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GitHub-Api-Version", "2022-11-28")
	status, answer, err := callTokenEndpoint(c, req) // exchange_oauth2.go
	switch {
	case err != nil:
		return nil, err
	case status != http.StatusCreated && status != http.StatusOK:
		// GitHub's message is not repeated: it may quote what it got.
		return nil, &errExchange{fmt.Sprintf("the token endpoint answered %d", status)}
	}
	var got struct {
		Token     string `json:"token"`
		ExpiresAt string `json:"expires_at"`
	}
	if err := json.Unmarshal(answer, &got); err != nil {
		return nil, &errExchange{"the token endpoint's answer is not a JSON installation token"}
	}
	out := &exchanged{AccessToken: got.Token}
	if got.ExpiresAt != "" {
		at, err := time.Parse(time.RFC3339, got.ExpiresAt)
		if err != nil {
			return nil, &errExchange{"the token endpoint's expires_at is not an RFC 3339 time"}
		}
		if out.Lifetime = at.Sub(now); out.Lifetime <= 0 {
			return nil, &errExchange{"the token endpoint issued a token that has expired"}
		}
	}
	// The installation token holds neither the key (as PEM or its bytes)
	// nor the JWT signed with it.
	if err := usableToken(out.AccessToken, jwtSecrets(g.PrivateKey, jwt)); err != nil {
		return nil, &errExchange{"the token endpoint's token " + err.Error()}
	}
	return out, nil
}

// githubAppJWT is the RS256 JWT GitHub wants of an App: iat a minute in the
// past (clock drift), exp 9 minutes ahead (at most 10 allowed), iss the id.
func githubAppJWT(key *rsa.PrivateKey, appID string, now time.Time) (string, error) {
	return signJWT(key, "", map[string]any{
		"iat": now.Add(-time.Minute).Unix(), "exp": now.Add(9 * time.Minute).Unix(), "iss": appID,
	})
}
