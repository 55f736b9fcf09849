package plugin

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"strings"
)

// Exchanged kinds that prove themselves with a private key (a GitHub App, a
// Google service account) sign a JWT with it and trade that for a token.

// signJWT is claims as a compact JWT (RFC 7519) signed RS256 with key; kid
// names the key in the header when it is not "".
func signJWT(key *rsa.PrivateKey, kid string, claims map[string]any) (string, error) {
	header, err := json.Marshal(struct {
		Alg string `json:"alg"`
		Typ string `json:"typ"`
		Kid string `json:"kid,omitempty"`
	}{"RS256", "JWT", kid})
	if err != nil {
		return "", err
	}
	body, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding
	signing := enc.EncodeToString(header) + "." + enc.EncodeToString(body)
	sum := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		return "", err
	}
	return signing + "." + enc.EncodeToString(sig), nil
}

// jwtSecrets are what a token bought with jwt must not hold: the PEM key
// that signed it (as written, its DER bytes raw and in base64, each of its
// lines alone), the JWT and its signature.
func jwtSecrets(pemKey, jwt string) []string {
	secrets := []string{pemKey, strings.TrimSpace(pemKey), jwt, jwt[strings.LastIndexByte(jwt, '.')+1:]}
	if block, _ := pem.Decode([]byte(strings.TrimSpace(pemKey))); block != nil {
		secrets = append(secrets, string(block.Bytes), base64.StdEncoding.EncodeToString(block.Bytes))
	}
	for _, line := range strings.Split(pemKey, "\n") {
		if line = strings.TrimSpace(line); len(line) >= 32 && !strings.HasPrefix(line, "-----") {
			secrets = append(secrets, line)
		}
	}
	return secrets
}
