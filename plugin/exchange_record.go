package plugin

import "time"

// What the engine keeps of an exchanged route's token (exchange.go), and
// what a resolve gets of it.

// exchangeRecord is a route's current access token, and the refresh token
// the endpoint last rotated to.
type exchangeRecord struct {
	Binding     string    `json:"binding"` // routeEntry.exchangeBinding at the fetch
	AccessToken string    `json:"access_token"`
	ObtainedAt  time.Time `json:"obtained_at"`
	RefreshAt   time.Time `json:"refresh_at"`
	ExpiresAt   time.Time `json:"expires_at"`
	// Lineage is routeEntry.refreshLineage when RefreshToken was rotated
	// from the route's refresh token; RefreshToken is used instead of the
	// route's while it matches.
	Lineage      string `json:"lineage,omitempty"`
	RefreshToken string `json:"refresh_token,omitempty"`
	// Earlier are the access tokens this one replaced that still work
	// upstream: masked in what comes back until they expire, never sent.
	Earlier []earlierToken `json:"earlier,omitempty"`
}

// earlierToken is an access token that was replaced, and its end.
type earlierToken struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

// maxEarlier bounds the replaced tokens a record keeps (a refresh replaces
// one; route updates and refreshes in a row can leave a few alive).
const maxEarlier = 4

// retired is what rec leaves to be masked once a token replaces it at now:
// its own token and its earlier ones that still live, newest first.
func (rec *exchangeRecord) retired(now time.Time) []earlierToken {
	var out []earlierToken
	if rec.AccessToken != "" && now.Before(rec.ExpiresAt) {
		out = append(out, earlierToken{rec.AccessToken, rec.ExpiresAt})
	}
	for _, e := range rec.Earlier {
		if now.Before(e.ExpiresAt) && len(out) < maxEarlier {
			out = append(out, e)
		}
	}
	return out
}

// liveToken is what a resolve gets of a route's exchange: the access token
// to send, and the others that still work upstream (to mask, never to
// send).
type liveToken struct {
	current string
	masks   []string
}

// live is rec's tokens at now.
func (rec *exchangeRecord) live(now time.Time) liveToken {
	tok := liveToken{current: rec.AccessToken}
	for _, e := range rec.Earlier {
		if now.Before(e.ExpiresAt) && e.Token != rec.AccessToken {
			tok.masks = append(tok.masks, e.Token)
		}
	}
	return tok
}

// refreshAfter is when to fetch anew a token that lives life: at 80% of
// its life or a minute before it ends, whichever is earlier, but not
// before half of it (a token of seconds is still used).
func refreshAfter(life time.Duration) time.Duration {
	at := min(life*8/10, life-time.Minute)
	return max(at, life/2)
}
