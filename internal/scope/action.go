package scope

import (
	"fmt"
	"strings"

	"github.com/phantomvault/phantom/internal/resolve"
)

// Action patterns narrow which API operations a token may call on a signed
// route: "s3:GetObject", "s3:Get*", "dynamodb:*". The part before ':' is
// the route's signing service, the rest an operation name (the API's own,
// as in X-Amz-Target or the SDK's method: GetObject, ListObjectsV2, not the
// IAM permission names) where '*' matches any run of characters.

// ValidateAction checks an allowed_actions entry.
func ValidateAction(p string) error {
	service, op, ok := strings.Cut(p, ":")
	if !ok || service == "" || op == "" {
		return fmt.Errorf("action pattern %q must be <service>:<operation>, for example s3:GetObject or s3:Get*", p)
	}
	for i := 0; i < len(p); i++ {
		if c := p[i]; !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte(":*-_.", c) >= 0) {
			return fmt.Errorf("action pattern %q: only letters, digits and - _ . * : are allowed", p)
		}
	}
	if strings.Contains(op, ":") || strings.Contains(service, "*") {
		return fmt.Errorf("action pattern %q: one ':' after a service without '*'", p)
	}
	return nil
}

// MatchAction reports whether action ("s3:GetObject") matches pattern.
func MatchAction(pattern, action string) bool { return resolve.MatchGlob(pattern, action) }

// MatchAnyAction reports whether action matches one of patterns.
func MatchAnyAction(patterns []string, action string) bool {
	for _, p := range patterns {
		if MatchAction(p, action) {
			return true
		}
	}
	return false
}

// NarrowActions checks that every pattern a mint asks for lies within the
// route's: each is matched, '*' and all, by one of the route's patterns.
// A route pattern matching the mint pattern's text matches every action the
// mint pattern does, since each of its '*' falls inside one of the route
// pattern's.
func NarrowActions(mint, route []string) error {
	for _, p := range mint {
		if err := ValidateAction(p); err != nil {
			return err
		}
		if len(route) > 0 && !MatchAnyAction(route, p) {
			return fmt.Errorf("%q is not within the route's allowed_actions", p)
		}
	}
	return nil
}
