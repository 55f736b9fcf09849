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
	// Earlier is the access token this one replaced, until EarlierExpiresAt:
	// still good at the upstream, so still masked in what comes back.
	Earlier          string    `json:"earlier,omitempty"`
	EarlierExpiresAt time.Time `json:"earlier_expires_at"`
}

// liveToken is what a resolve gets of a route's exchange: the access token
// to send, and the one it replaced while that still lives (to mask, never
// to send).
type liveToken struct{ current, earlier string }

// masks are the tokens to mask but not send.
func (t liveToken) masks() []string {
	if t.earlier == "" {
		return nil
	}
	return []string{t.earlier}
}

// live is rec's tokens at now.
func (rec *exchangeRecord) live(now time.Time) liveToken {
	tok := liveToken{current: rec.AccessToken}
	if now.Before(rec.EarlierExpiresAt) {
		tok.earlier = rec.Earlier
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
