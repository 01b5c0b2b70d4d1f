package backends

import (
	"crypto"
	"encoding/base64"
	"fmt"

	jose "github.com/go-jose/go-jose/v4"
)

// KeyID is the kid of a public key: its RFC 7638 JWK thumbprint (SHA-256,
// base64url). Every replica and every verifier derives the same value from
// the key alone, so a kid needs no coordination and names the key exactly.
func KeyID(pub crypto.PublicKey) (string, error) {
	tp, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("computing the JWK thumbprint of a %T: %w", pub, err)
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}
