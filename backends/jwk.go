package backends

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"math/big"
)

// PublicJWK holds the public members of a JSON Web Key (RFC 7517/7518/8037),
// base64url-encoded without padding.
type PublicJWK struct {
	Kty string // "EC", "RSA" or "OKP"
	Crv string // EC and OKP
	X   string // EC and OKP
	Y   string // EC
	N   string // RSA
	E   string // RSA
}

var b64 = base64.RawURLEncoding

// JWKFromPublicKey converts an ECDSA, RSA or Ed25519 public key.
func JWKFromPublicKey(pub crypto.PublicKey) (PublicJWK, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		// Coordinates are left-padded to the field size (RFC 7518 6.2.1.2).
		size := (k.Curve.Params().BitSize + 7) / 8
		raw, err := k.Bytes() // 0x04 || X || Y, each padded to size
		if err != nil {
			return PublicJWK{}, fmt.Errorf("encoding ECDSA public key: %w", err)
		}
		return PublicJWK{Kty: "EC", Crv: k.Curve.Params().Name,
			X: b64.EncodeToString(raw[1 : 1+size]), Y: b64.EncodeToString(raw[1+size:])}, nil
	case *rsa.PublicKey:
		return PublicJWK{Kty: "RSA", N: b64.EncodeToString(k.N.Bytes()),
			E: b64.EncodeToString(big.NewInt(int64(k.E)).Bytes())}, nil
	case ed25519.PublicKey:
		return PublicJWK{Kty: "OKP", Crv: "Ed25519", X: b64.EncodeToString(k)}, nil
	}
	return PublicJWK{}, fmt.Errorf("unsupported public key type %T", pub)
}

// Thumbprint is the RFC 7638 JWK thumbprint: SHA-256 over the required
// members in lexicographic order with no white space, base64url-encoded.
// Signet uses it as the kid, so every replica and verifier derives the same.
func (j PublicJWK) Thumbprint() string {
	var canonical string
	switch j.Kty {
	case "EC":
		canonical = fmt.Sprintf(`{"crv":%q,"kty":"EC","x":%q,"y":%q}`, j.Crv, j.X, j.Y)
	case "RSA":
		canonical = fmt.Sprintf(`{"e":%q,"kty":"RSA","n":%q}`, j.E, j.N)
	case "OKP":
		canonical = fmt.Sprintf(`{"crv":%q,"kty":"OKP","x":%q}`, j.Crv, j.X)
	}
	sum := sha256.Sum256([]byte(canonical))
	return b64.EncodeToString(sum[:])
}
