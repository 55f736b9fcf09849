package plugin

import (
	"errors"
	"maps"
	"slices"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// A mint may narrow a github_app route's installation tokens further than
// the route does: token/<route> takes repositories and permissions, each
// within the route's. A token's installation tokens are then asked for with
// the route's narrowing narrowed by the token's (its effective narrowing),
// and each effective narrowing is its own variant of the route's exchange
// (exchange.go): its own installation token, fetched once per expiry and
// kept under exchanged/<route>/<variant>, never shared with a token of
// another narrowing.

// githubAppMintFields are the mint's narrowing parameters.
func githubAppMintFields() map[string]*framework.FieldSchema {
	return map[string]*framework.FieldSchema{
		"repositories": {
			Type:        framework.TypeCommaStringSlice,
			Description: "github_app routes: repository names this token's installation tokens are narrowed to; each must be one of the route's repositories when the route names any.",
		},
		"permissions": {
			Type:        framework.TypeCommaStringSlice,
			Description: "github_app routes: permissions this token's installation tokens are narrowed to, such as contents=read; each must be one the route names (when it names any) at a level no higher than the route's (read < write < admin).",
		},
	}
}

// narrowGitHubApp applies a mint's repositories and permissions to t,
// refusing anything wider than route's.
func narrowGitHubApp(t *tokenEntry, route *routeEntry, d *framework.FieldData) *logical.Response {
	rawRepos, hasRepos := d.GetOk("repositories")
	rawPerms, hasPerms := d.GetOk("permissions")
	if !hasRepos && !hasPerms {
		return nil
	}
	g := route.GitHubApp
	if route.AuthType != authGitHubApp || g == nil {
		field := "repositories"
		if !hasRepos {
			field = "permissions"
		}
		return logical.ErrorResponse("%s applies only to github_app routes", field)
	}
	if hasRepos {
		repos := cleanList(rawRepos.([]string))
		if len(repos) == 0 {
			return emptyNarrowing("repositories", "repository")
		}
		if err := checkRepositories(repos); err != nil {
			return logical.ErrorResponse(err.Error())
		}
		for _, repo := range repos {
			if len(g.Repositories) > 0 && !slices.Contains(g.Repositories, repo) {
				return logical.ErrorResponse("repositories: %s is wider than the route allows (%v)", repo, g.Repositories)
			}
		}
		slices.Sort(repos)
		t.Repositories = slices.Compact(repos)
	}
	if hasPerms {
		pairs := cleanList(rawPerms.([]string))
		if len(pairs) == 0 {
			return emptyNarrowing("permissions", "permission")
		}
		perms, err := parsePermissions(pairs)
		if err == nil {
			err = checkPermissions(perms)
		}
		if err != nil {
			return logical.ErrorResponse(err.Error())
		}
		for _, k := range slices.Sorted(maps.Keys(perms)) {
			if len(g.Permissions) == 0 {
				break
			}
			if level, ok := g.Permissions[k]; !ok || permissionLevel(perms[k]) > permissionLevel(level) {
				return logical.ErrorResponse("permissions: %s=%s is wider than the route allows (%s)", k, perms[k], permissionList(g.Permissions))
			}
		}
		t.Permissions = perms
	}
	return nil
}

// narrowedFor is route as t's exchange sees it: route itself when t does
// not narrow it (or narrows it to just the route's own narrowing), else a
// copy whose GitHub App settings are the route's narrowed by t's, under
// their own exchange variant. The route may have changed since the mint:
// what it no longer grants is left out, and an error says that nothing of
// t's narrowing is left (an empty list would mean the whole installation).
func (r *routeEntry) narrowedFor(t *tokenEntry) (*routeEntry, error) {
	if len(t.Repositories) == 0 && len(t.Permissions) == 0 {
		return r, nil
	}
	g := r.GitHubApp
	if r.AuthType != authGitHubApp || g == nil {
		return nil, errors.New("the token narrows a GitHub App's installation tokens, and its route is no longer a github_app route")
	}
	n := *g
	if len(t.Repositories) > 0 {
		n.Repositories = t.Repositories // sorted at mint
		if len(g.Repositories) > 0 {
			n.Repositories = slices.DeleteFunc(slices.Clone(t.Repositories), func(repo string) bool { return !slices.Contains(g.Repositories, repo) })
		}
		if len(n.Repositories) == 0 {
			return nil, errors.New("the route no longer grants any of the token's repositories")
		}
	}
	if len(t.Permissions) > 0 {
		n.Permissions = make(map[string]string, len(t.Permissions))
		for k, level := range t.Permissions {
			routeLevel, ok := g.Permissions[k]
			switch {
			case len(g.Permissions) == 0:
				n.Permissions[k] = level
			case ok && permissionLevel(routeLevel) < permissionLevel(level):
				n.Permissions[k] = routeLevel
			case ok:
				n.Permissions[k] = level
			}
		}
		if len(n.Permissions) == 0 {
			return nil, errors.New("the route no longer grants any of the token's permissions")
		}
	}
	if sameSet(n.Repositories, g.Repositories) && maps.Equal(n.Permissions, g.Permissions) {
		return r, nil
	}
	// The whole hash: a collision would make two narrowings share one record
	// and fetch in turn (never use each other's token: the record's binding
	// holds the whole narrowing).
	n.variant = hashFields(strings.Join(n.Repositories, ","), permissionList(n.Permissions))
	// The record is bound to the route's own narrowing as well: any change
	// of it (which needs private_key again) fetches every variant anew.
	n.narrowedFrom = hashFields(strings.Join(g.Repositories, ","), permissionList(g.Permissions))
	c := *r
	c.GitHubApp = &n
	return &c, nil
}

// exchangeVariant names the narrowing of the route's exchange this copy of
// it asks for; "" for the route's own.
func (r *routeEntry) exchangeVariant() string {
	if r.GitHubApp == nil {
		return ""
	}
	return r.GitHubApp.variant
}

// permissionList is perms as name=level pairs, sorted.
func permissionList(perms map[string]string) string {
	pairs := make([]string, 0, len(perms))
	for _, k := range slices.Sorted(maps.Keys(perms)) {
		pairs = append(pairs, k+"="+perms[k])
	}
	return strings.Join(pairs, ",")
}

func sameSet(a, b []string) bool {
	return len(a) == len(b) && !slices.ContainsFunc(a, func(s string) bool { return !slices.Contains(b, s) })
}

// orRoutePermissions is the token's permissions, else the route's (never
// nil, for a read).
func orRoutePermissions(token, route map[string]string) map[string]string {
	out := map[string]string{}
	if len(token) > 0 {
		route = token
	}
	maps.Copy(out, route)
	return out
}
