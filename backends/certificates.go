package backends

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// CertificateStore is implemented by backends that can keep an X.509
// certificate chain next to each version's key: a file beside the key
// (local), Transit's per-version certificate chain (Vault), certificate
// objects with the key pair's CKA_ID (PKCS#11), the key's description (AWS
// KMS). Such a backend fills in
// Version.Certificates in Versions. It is optional: a ring that asks for
// certificates on a backend without it is refused at startup.
type CertificateStore interface {
	// PutCertificates stores chain (DER, the version's certificate first,
	// each next one certifying the one before) for the version, if the
	// chain stored now is old (nil: none). It returns the chain stored
	// after the call: chain itself, or the one another writer stored first,
	// so that replicas racing to attach a certificate keep one between
	// them. Where the backend cannot compare and set atomically it says so
	// in its documentation; the chain read back by every replica's next
	// Versions is the one in force.
	PutCertificates(ctx context.Context, ring KeyRing, versionID string, old, chain [][]byte) ([][]byte, error)
}

// SameChain reports whether two DER chains are the same certificates in
// the same order.
func SameChain(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// MessageSigner is a crypto.Signer (and crypto.MessageSigner) whose private
// key stays in a backend: each signature is one Sign call of the backend
// for exactly one version. crypto/x509 calls SignMessage with the whole
// TBSCertificate or CertificationRequestInfo, which is what the backend
// takes (it hashes itself); the result is converted from the JWS encoding
// to X.509's (ECDSA as a DER SEQUENCE, RSA and Ed25519 as they are).
type MessageSigner struct {
	Ctx     context.Context
	Backend Signer
	Ring    KeyRing
	Version Version
}

var _ crypto.MessageSigner = (*MessageSigner)(nil)

// Public is the version's public key.
func (m *MessageSigner) Public() crypto.PublicKey { return m.Version.PublicKey }

// Sign refuses: the backend signs messages, never a digest made elsewhere.
func (m *MessageSigner) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, errors.New("a backend key signs whole messages (crypto.MessageSigner), not digests")
}

// SignMessage has the backend sign msg with the version, after checking
// that opts ask for exactly what the ring's algorithm does.
func (m *MessageSigner) SignMessage(_ io.Reader, msg []byte, opts crypto.SignerOpts) ([]byte, error) {
	a := m.Ring.Algorithm
	_, pss := opts.(*rsa.PSSOptions)
	if opts.HashFunc() != a.Hash() || pss != a.IsRSAPSS() {
		return nil, fmt.Errorf("key ring %q signs %s, which does not match the X.509 signature algorithm asked for", m.Ring.Name, a)
	}
	if pss && opts.(*rsa.PSSOptions).SaltLength != rsa.PSSSaltLengthEqualsHash {
		return nil, fmt.Errorf("key ring %q signs %s with a salt as long as the hash, not another length", m.Ring.Name, a)
	}
	sig, err := m.Backend.Sign(m.Ctx, m.Ring, m.Version.ID, msg)
	if err != nil {
		return nil, err
	}
	if a.IsECDSA() {
		return ECDSASignatureToDER(a, sig)
	}
	return sig, nil
}

// X509SignatureAlgorithm is the X.509 signature algorithm of what a
// signs: the same hash, and for PS* a salt as long as the hash (which is
// what crypto/x509 uses for RSA-PSS).
func (a Algorithm) X509SignatureAlgorithm() x509.SignatureAlgorithm {
	return map[Algorithm]x509.SignatureAlgorithm{ES256: x509.ECDSAWithSHA256, ES384: x509.ECDSAWithSHA384,
		ES512: x509.ECDSAWithSHA512, RS256: x509.SHA256WithRSA, RS384: x509.SHA384WithRSA, RS512: x509.SHA512WithRSA,
		PS256: x509.SHA256WithRSAPSS, PS384: x509.SHA384WithRSAPSS, PS512: x509.SHA512WithRSAPSS, EdDSA: x509.PureEd25519}[a]
}

// ECDSASignatureToDER converts a JWS ECDSA signature (fixed-length R||S)
// to the DER SEQUENCE of two INTEGERs that X.509 uses.
func ECDSASignatureToDER(a Algorithm, sig []byte) ([]byte, error) {
	size := a.SignatureSize() / 2
	if !a.IsECDSA() || len(sig) != 2*size {
		return nil, fmt.Errorf("a %s signature is %d bytes, not %d", a, len(sig), 2*size)
	}
	r, s := new(big.Int).SetBytes(sig[:size]), new(big.Int).SetBytes(sig[size:])
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1BigInt(r)
		b.AddASN1BigInt(s)
	})
	return b.Bytes()
}

// EncodePEMChain writes a DER chain as concatenated PEM CERTIFICATE blocks.
func EncodePEMChain(chain [][]byte) []byte {
	var out []byte
	for _, der := range chain {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	return out
}

// DecodePEMChain reads concatenated PEM CERTIFICATE blocks as a DER chain;
// anything else in it is an error. Empty input is an empty chain.
func DecodePEMChain(data []byte) ([][]byte, error) {
	var chain [][]byte
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("a %s block where a certificate belongs", b.Type)
		}
		chain = append(chain, b.Bytes)
	}
	if len(bytes.TrimSpace(data)) > 0 {
		return nil, fmt.Errorf("%d bytes that are not PEM after the certificates", len(data))
	}
	return chain, nil
}
