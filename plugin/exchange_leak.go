package plugin

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
)

// A token endpoint may echo what it was sent (a form body holding a refresh
// token, a Basic header holding the client secret, a JWT) inside the token
// it answers, in any encoding it likes. The proxy would then hold, and send
// upstream, the long-lived secret. So a token is refused when it shares a
// run of leakRun characters with any form of a secret the engine sent: the
// secret as text, percent-encoded as a form or path sends it, in base64
// (standard and URL-safe, at each of the three alignments a secret can
// have inside a larger encoded text), and each of those in hex. Shorter
// forms must appear whole. A run of 16 characters of key material does
// not occur in an honest token by chance.
const leakRun = 16

// usableToken refuses a token that cannot go in a header, would mask
// ordinary text, or holds part of one of secrets in any form above.
func usableToken(tok string, secrets []string) error {
	switch {
	case tok == "":
		return errors.New("is missing")
	case len(tok) < minAccessTokenLen:
		return fmt.Errorf("is shorter than %d characters", minAccessTokenLen)
	case validateCredential(tok) != nil:
		return errors.New("is not a header value")
	case holdsSecret(tok, secrets):
		return errors.New("holds one of the route's secrets")
	}
	return nil
}

// holdsSecret reports whether tok holds a secret whole, or a run of
// leakRun characters of one of its forms.
func holdsSecret(tok string, secrets []string) bool {
	runs := make(map[string]struct{}, max(len(tok)-leakRun+1, 0))
	for i := 0; i+leakRun <= len(tok); i++ {
		runs[tok[i:i+leakRun]] = struct{}{}
	}
	for _, secret := range secrets {
		if secret == "" {
			continue
		}
		if strings.Contains(tok, secret) {
			return true
		}
		for _, form := range secretForms(secret) {
			if len(form) < minAccessTokenLen {
				continue // too short to tell an echo from chance
			}
			if len(form) < leakRun {
				if strings.Contains(tok, form) {
					return true
				}
				continue
			}
			for i := 0; i+leakRun <= len(form); i++ {
				if _, ok := runs[form[i:i+leakRun]]; ok {
					return true
				}
			}
		}
	}
	return false
}

// secretForms are the spellings of secret an endpoint could echo. Of a
// JWT, only its signature is secret: its header and claims are shared with
// any honest JWT access token of the same issuer, and carry no power.
func secretForms(secret string) []string {
	if sig, ok := jwtSignature(secret); ok {
		secret = sig
	}
	texts := []string{secret, url.QueryEscape(secret), url.PathEscape(secret)}
	slices.Sort(texts)
	texts = slices.Compact(texts)
	forms := texts
	for _, t := range texts {
		for pad := range 3 {
			forms = append(forms, alignedBase64(base64.RawStdEncoding, t, pad), alignedBase64(base64.RawURLEncoding, t, pad))
		}
	}
	for _, f := range forms[:len(forms):len(forms)] {
		h := hex.EncodeToString([]byte(f))
		forms = append(forms, h, strings.ToUpper(h))
	}
	return forms
}

// alignedBase64 is the part of enc's encoding of s that is the same
// wherever s stands, when pad bytes precede it: the characters that hold
// only bits of s.
func alignedBase64(enc *base64.Encoding, s string, pad int) string {
	e := enc.EncodeToString(append(make([]byte, pad), s...))
	start := (pad*8 + 5) / 6 // the first character free of the pad's bits
	end := (pad + len(s)) * 8 / 6
	if start >= end {
		return ""
	}
	return e[start:end]
}

// jwtSignature is the signature of a compact JWT.
func jwtSignature(s string) (string, bool) {
	parts := strings.Split(s, ".")
	if len(parts) != 3 || !strings.HasPrefix(parts[0], "eyJ") || len(parts[2]) < leakRun {
		return "", false
	}
	return parts[2], true
}
