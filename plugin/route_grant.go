package plugin

import (
	"time"

	"github.com/phantomvault/phantom/internal/resolve"
)

// routeGrant is what the proxy needs of a route to forward a request at
// now: for a signed route, the key of now's day instead of the secret.
func routeGrant(route *routeEntry, now time.Time) *resolve.RouteGrant {
	if route.AuthType == authHMAC {
		return route.hmacRouteGrant() // no credential
	}
	name, format := route.injection()
	g := &resolve.RouteGrant{
		Upstream:   route.Upstream,
		Credential: route.Credential,
		AuthType:   route.AuthType,
		AuthName:   name,
		AuthFormat: format,
		Headers:    route.Headers,
	}
	if route.AuthType == authAWSSigV4 {
		route.awsGrant(g, now) // auth_aws.go
	}
	if _, ok := exchangers[route.AuthType]; ok {
		// Only the access token, as a bearer key or (github_app) git's
		// password; the one it replaced is masked while it lives.
		g.Credential, g.Mask = route.accessToken.current, route.accessToken.masks
		g.AuthType, g.AuthName, g.AuthFormat = route.GitHubApp.injection() // auth_github_app.go
	}
	return g
}
