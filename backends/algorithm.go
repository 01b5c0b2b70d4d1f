package backends

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"math/big"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Algorithm is a JWS "alg" value (RFC 7518). "none" and the HS* family are
// not algorithms here: Signet only ever signs with private keys it cannot see.
type Algorithm string

const (
	ES256 Algorithm = "ES256"
	ES384 Algorithm = "ES384"
	ES512 Algorithm = "ES512"
	RS256 Algorithm = "RS256"
	RS384 Algorithm = "RS384"
	RS512 Algorithm = "RS512"
	PS256 Algorithm = "PS256"
	PS384 Algorithm = "PS384"
	PS512 Algorithm = "PS512"
	EdDSA Algorithm = "EdDSA"
)

// AllAlgorithms lists every algorithm Signet knows, in a stable order.
var AllAlgorithms = []Algorithm{ES256, ES384, ES512, RS256, RS384, RS512, PS256, PS384, PS512, EdDSA}

// ParseAlgorithm accepts exactly the names of RFC 7518 and RFC 8037.
func ParseAlgorithm(s string) (Algorithm, error) {
	for _, a := range AllAlgorithms {
		if string(a) == s {
			return a, nil
		}
	}
	return "", fmt.Errorf("unknown algorithm %q (want one of %v)", s, AllAlgorithms)
}

// Hash is the digest the algorithm signs; 0 for EdDSA, which signs the
// message itself.
func (a Algorithm) Hash() crypto.Hash {
	switch a {
	case ES256, RS256, PS256:
		return crypto.SHA256
	case ES384, RS384, PS384:
		return crypto.SHA384
	case ES512, RS512, PS512:
		return crypto.SHA512
	}
	return 0
}

// Curve is the ECDSA curve of an ES* algorithm, nil otherwise.
func (a Algorithm) Curve() elliptic.Curve {
	switch a {
	case ES256:
		return elliptic.P256()
	case ES384:
		return elliptic.P384()
	case ES512:
		return elliptic.P521()
	}
	return nil
}

// IsECDSA, IsRSAPKCS1, IsRSAPSS and IsEdDSA tell the algorithm families apart.
func (a Algorithm) IsECDSA() bool    { return a == ES256 || a == ES384 || a == ES512 }
func (a Algorithm) IsRSAPKCS1() bool { return a == RS256 || a == RS384 || a == RS512 }
func (a Algorithm) IsRSAPSS() bool   { return a == PS256 || a == PS384 || a == PS512 }
func (a Algorithm) IsEdDSA() bool    { return a == EdDSA }

// SignatureSize is the exact JWS signature length of an ECDSA or EdDSA
// algorithm (64/96/132 for ES256/384/512, 64 for EdDSA), 0 for RSA, whose
// signature is as long as the modulus.
func (a Algorithm) SignatureSize() int {
	switch a {
	case ES256, EdDSA:
		return 64
	case ES384:
		return 96
	case ES512:
		return 132
	}
	return 0
}

// MinRSABits is the smallest modulus Signet accepts for RS* and PS*.
const MinRSABits = 2048

// CheckPublicKey reports whether pub is a key of the kind alg signs with.
func (a Algorithm) CheckPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if a.IsECDSA() && k.Curve == a.Curve() {
			return nil
		}
		return fmt.Errorf("ECDSA key on curve %s cannot sign %s", k.Curve.Params().Name, a)
	case *rsa.PublicKey:
		if !(a.IsRSAPKCS1() || a.IsRSAPSS()) {
			return fmt.Errorf("RSA key cannot sign %s", a)
		}
		if k.N.BitLen() < MinRSABits {
			return fmt.Errorf("RSA key of %d bits is too small for %s (minimum %d)", k.N.BitLen(), a, MinRSABits)
		}
		return nil
	case ed25519.PublicKey:
		if a == EdDSA && len(k) == ed25519.PublicKeySize {
			return nil
		}
		return fmt.Errorf("Ed25519 key cannot sign %s", a)
	}
	return fmt.Errorf("unsupported public key type %T", pub)
}

// ECDSASignatureFromInts encodes r and s as the fixed-length big-endian
// R||S that JWS requires (RFC 7518 section 3.4).
func ECDSASignatureFromInts(a Algorithm, r, s *big.Int) ([]byte, error) {
	size := a.SignatureSize() / 2
	if !a.IsECDSA() || r.Sign() <= 0 || s.Sign() <= 0 || r.BitLen() > size*8 || s.BitLen() > size*8 {
		return nil, fmt.Errorf("invalid ECDSA signature values for %s", a)
	}
	out := make([]byte, 2*size)
	r.FillBytes(out[:size])
	s.FillBytes(out[size:])
	return out, nil
}

// RSABits is the modulus size Signet creates for an RS* or PS* ring:
// 2048 for SHA-256, 3072 for SHA-384 and 4096 for SHA-512, matching the
// strength of the hash. 0 for other algorithms.
func (a Algorithm) RSABits() int {
	switch a {
	case RS256, PS256:
		return 2048
	case RS384, PS384:
		return 3072
	case RS512, PS512:
		return 4096
	}
	return 0
}

// SignWithKey produces the JWS signature of signingInput with a private key
// held in process memory. It is what a software backend (and a test) signs
// with; backends that hold keys elsewhere only ask their device or service.
func SignWithKey(a Algorithm, key crypto.Signer, signingInput []byte) ([]byte, error) {
	if a.IsEdDSA() {
		k, ok := key.(ed25519.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("%s needs an Ed25519 key, not %T", a, key)
		}
		return ed25519.Sign(k, signingInput), nil
	}
	h := a.Hash()
	var digest []byte
	switch h {
	case crypto.SHA256:
		d := sha256.Sum256(signingInput)
		digest = d[:]
	case crypto.SHA384:
		d := sha512.Sum384(signingInput)
		digest = d[:]
	case crypto.SHA512:
		d := sha512.Sum512(signingInput)
		digest = d[:]
	default:
		return nil, fmt.Errorf("unsupported algorithm %q", a)
	}
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		if !a.IsECDSA() || k.Curve != a.Curve() {
			return nil, fmt.Errorf("%s cannot sign with an ECDSA %s key", a, k.Curve.Params().Name)
		}
		der, err := ecdsa.SignASN1(rand.Reader, k, digest)
		if err != nil {
			return nil, err
		}
		return ecdsaDERToJWS(a, der)
	case *rsa.PrivateKey:
		switch {
		case a.IsRSAPKCS1():
			return rsa.SignPKCS1v15(rand.Reader, k, h, digest)
		case a.IsRSAPSS():
			// RFC 7518 3.5: the salt is as long as the hash output.
			return rsa.SignPSS(rand.Reader, k, h, digest, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		}
	}
	return nil, fmt.Errorf("%s cannot sign with a %T", a, key)
}

// Verify checks a JWS signature (as SignWithKey makes it: ECDSA as R||S,
// PS* with a salt as long as the hash) over signingInput with pub. It is
// how Signet checks what a remote backend returned before a token leaves.
func (a Algorithm) Verify(pub crypto.PublicKey, signingInput, sig []byte) error {
	if a.IsEdDSA() {
		k, ok := pub.(ed25519.PublicKey)
		if !ok || !ed25519.Verify(k, signingInput, sig) {
			return errBadSignature
		}
		return nil
	}
	h := a.Hash()
	if h == 0 {
		return fmt.Errorf("unsupported algorithm %q", a)
	}
	hasher := h.New()
	hasher.Write(signingInput)
	digest := hasher.Sum(nil)
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		size := a.SignatureSize() / 2
		if !a.IsECDSA() || len(sig) != 2*size {
			return errBadSignature
		}
		r, s := new(big.Int).SetBytes(sig[:size]), new(big.Int).SetBytes(sig[size:])
		if !ecdsa.Verify(k, digest, r, s) {
			return errBadSignature
		}
		return nil
	case *rsa.PublicKey:
		var err error
		switch {
		case a.IsRSAPKCS1():
			err = rsa.VerifyPKCS1v15(k, h, digest, sig)
		case a.IsRSAPSS():
			err = rsa.VerifyPSS(k, h, digest, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		default:
			return errBadSignature
		}
		if err != nil {
			return errBadSignature
		}
		return nil
	}
	return fmt.Errorf("%s cannot verify with a %T", a, pub)
}

var errBadSignature = errors.New("the signature does not verify with the public key")

// GenerateKey creates a software key pair for alg.
func GenerateKey(a Algorithm) (crypto.Signer, error) {
	switch {
	case a.IsECDSA():
		return ecdsa.GenerateKey(a.Curve(), rand.Reader)
	case a.IsRSAPKCS1(), a.IsRSAPSS():
		return rsa.GenerateKey(rand.Reader, a.RSABits())
	case a.IsEdDSA():
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	}
	return nil, fmt.Errorf("unsupported algorithm %q", a)
}

// ecdsaDERToJWS is ECDSASignatureFromDER without big.Int, for the
// well-formed signatures crypto/ecdsa makes (a signature is made on every
// Sign); anything it does not take goes through ECDSASignatureFromDER, for
// the same result or error.
func ecdsaDERToJWS(a Algorithm, der []byte) ([]byte, error) {
	size := a.SignatureSize() / 2
	var r, s []byte
	in := cryptobyte.String(der)
	var seq cryptobyte.String
	if a.IsECDSA() && in.ReadASN1(&seq, cbasn1.SEQUENCE) && in.Empty() &&
		seq.ReadASN1Integer(&r) && seq.ReadASN1Integer(&s) && seq.Empty() && // non-negative, minimal
		len(r) <= size && len(s) <= size && !(len(r) == 1 && r[0] == 0) && !(len(s) == 1 && s[0] == 0) {
		out := make([]byte, 2*size)
		copy(out[size-len(r):size], r)
		copy(out[2*size-len(s):], s)
		return out, nil
	}
	return ECDSASignatureFromDER(a, der)
}

// ECDSASignatureFromDER converts an ASN.1 DER ECDSA signature (SEQUENCE of
// INTEGER r, s), as AWS KMS and most HSM APIs return it, to the fixed-length
// R||S that JWS requires. It refuses anything but exactly one well-formed
// signature whose values fit the curve.
func ECDSASignatureFromDER(a Algorithm, der []byte) ([]byte, error) {
	// cryptobyte, unlike encoding/asn1, also refuses extra elements inside
	// the SEQUENCE.
	r, s := new(big.Int), new(big.Int)
	in := cryptobyte.String(der)
	var seq cryptobyte.String
	if !in.ReadASN1(&seq, cbasn1.SEQUENCE) || !in.Empty() ||
		!seq.ReadASN1Integer(r) || !seq.ReadASN1Integer(s) || !seq.Empty() {
		return nil, fmt.Errorf("ECDSA signature is not one DER SEQUENCE of two INTEGERs")
	}
	return ECDSASignatureFromInts(a, r, s)
}
