// Package x5c makes and checks the X.509 certificates Signet publishes with
// its keys (the JWKS "x5c" member, RFC 7517 section 4.7): a certificate per
// version, self-signed, issued by a CA ring of this Signet, or by a Vault PKI
// secrets engine from a certification request. Every signature here is made
// by a backend through backends.MessageSigner: no private key, the CA's
// included, is ever in this process.
package x5c

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"time"

	"github.com/signet-dev/signet/backends"
)

// Profile is what a ring's certificates say, within the bounds Signet
// keeps: key usage digitalSignature only and no CA bit on a leaf; a CA
// certificate may sign certificates only, with path length 0.
type Profile struct {
	Subject  pkix.Name
	DNSNames []string
	URIs     []*url.URL
	// Validity is how long a new certificate is valid for.
	Validity time.Duration
	// RenewBefore is how long before its notAfter a certificate is
	// replaced.
	RenewBefore time.Duration
}

// backdate is how long before its creation a certificate is valid from,
// for verifiers whose clocks are a little behind.
const backdate = time.Minute

func serial() (*big.Int, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	b[0] &= 0x7f
	b[0] |= 0x40 // positive, and 16 bytes long
	return new(big.Int).SetBytes(b), nil
}

// keyID is the subject key identifier of pub: SHA-256 of its
// subjectPublicKey, truncated to 160 bits (RFC 7093 section 2, method 1).
func keyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		Key       asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return nil, err
	}
	sum := sha256.Sum256(spki.Key.Bytes)
	return sum[:20], nil
}

func template(p Profile, pub crypto.PublicKey, now time.Time) (*x509.Certificate, error) {
	sn, err := serial()
	if err != nil {
		return nil, err
	}
	skid, err := keyID(pub)
	if err != nil {
		return nil, err
	}
	return &x509.Certificate{SerialNumber: sn, Subject: p.Subject, DNSNames: p.DNSNames, URIs: p.URIs,
		NotBefore: now.Add(-backdate).UTC(), NotAfter: now.Add(p.Validity).UTC(), SubjectKeyId: skid,
		KeyUsage: x509.KeyUsageDigitalSignature, BasicConstraintsValid: true}, nil
}

// SelfSigned makes a leaf certificate for signer's key, signed by itself.
func SelfSigned(signer crypto.Signer, alg backends.Algorithm, p Profile, now time.Time) ([]byte, error) {
	t, err := template(p, signer.Public(), now)
	if err != nil {
		return nil, err
	}
	t.SignatureAlgorithm = alg.X509SignatureAlgorithm()
	t.AuthorityKeyId = t.SubjectKeyId
	return create(t, t, signer.Public(), signer)
}

// CA makes a self-signed CA certificate for signer's key: it may sign
// certificates (and CRLs) only, and only of end entities (path length 0).
func CA(signer crypto.Signer, alg backends.Algorithm, p Profile, now time.Time) ([]byte, error) {
	t, err := template(p, signer.Public(), now)
	if err != nil {
		return nil, err
	}
	t.SignatureAlgorithm = alg.X509SignatureAlgorithm()
	t.AuthorityKeyId = t.SubjectKeyId
	t.IsCA, t.MaxPathLen, t.MaxPathLenZero = true, 0, true
	t.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	return create(t, t, signer.Public(), signer)
}

// Leaf makes a certificate for pub issued by ca, signed with caSigner (the
// CA ring's version whose certificate ca is). It never outlives ca.
func Leaf(pub crypto.PublicKey, ca *x509.Certificate, caSigner crypto.Signer, caAlg backends.Algorithm, p Profile, now time.Time) ([]byte, error) {
	t, err := template(p, pub, now)
	if err != nil {
		return nil, err
	}
	if t.NotAfter.After(ca.NotAfter) {
		t.NotAfter = ca.NotAfter
	}
	if !now.Before(ca.NotAfter) {
		return nil, fmt.Errorf("the CA certificate %q expired at %s", ca.Subject, ca.NotAfter.UTC().Format(time.RFC3339))
	}
	t.SignatureAlgorithm = caAlg.X509SignatureAlgorithm()
	return create(t, ca, pub, caSigner)
}

// CSR makes a PKCS #10 certification request for signer's key, signed by
// it (proof of possession without the key leaving its backend).
func CSR(signer crypto.Signer, alg backends.Algorithm, p Profile) ([]byte, error) {
	return x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: p.Subject, DNSNames: p.DNSNames,
		URIs: p.URIs, SignatureAlgorithm: alg.X509SignatureAlgorithm()}, signer)
}

func create(t, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) ([]byte, error) {
	der, err := x509.CreateCertificate(rand.Reader, t, parent, pub, signer)
	if err != nil {
		return nil, err
	}
	return der, nil
}

// Chain is a parsed certificate chain, the version's certificate first.
type Chain []*x509.Certificate

// Parse parses a DER chain and checks that it is one for pub: the first
// certificate certifies pub, each next one signed the one before, and
// every one is valid at now. Whether the last is a trust anchor is the
// verifier's to decide. A chain whose first certificate is for another key is
// ErrWrongKey: it must never be published with pub.
func Parse(ders [][]byte, pub crypto.PublicKey, now time.Time) (Chain, error) {
	if len(ders) == 0 {
		return nil, errors.New("no certificate")
	}
	chain := make(Chain, len(ders))
	for i, der := range ders {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("certificate %d of the chain: %v", i, err)
		}
		chain[i] = c
	}
	leafPub, ok := chain[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !leafPub.Equal(pub) {
		return nil, ErrWrongKey
	}
	for i, c := range chain {
		if i+1 < len(chain) {
			if err := c.CheckSignatureFrom(chain[i+1]); err != nil {
				return nil, fmt.Errorf("certificate %d of the chain is not signed by certificate %d: %v", i, i+1, err)
			}
		}
		if now.Before(c.NotBefore) || !now.Before(c.NotAfter) {
			return nil, fmt.Errorf("certificate %d of the chain (%q, serial %x) is valid from %s to %s, not now",
				i, c.Subject, c.SerialNumber, c.NotBefore.UTC().Format(time.RFC3339), c.NotAfter.UTC().Format(time.RFC3339))
		}
	}
	return chain, nil
}

// CheckLeaf refuses a leaf certificate issued elsewhere (Vault PKI) that
// goes beyond what Signet publishes: a CA bit, a key usage other than
// digitalSignature, or a life too short to outlast renew_before (it would
// be renewed again at every refresh).
func CheckLeaf(c *x509.Certificate, p Profile, now time.Time) error {
	switch {
	case c.IsCA:
		return errors.New("it is a CA certificate; a published key's certificate must not be")
	case c.KeyUsage != x509.KeyUsageDigitalSignature:
		return fmt.Errorf("its key usage is %#x, not digitalSignature only (set the role's key_usage to DigitalSignature)", c.KeyUsage)
	case c.NotAfter.Sub(now) <= p.RenewBefore:
		return fmt.Errorf("it expires at %s, within renew_before (%v): the role's max_ttl is shorter than validity",
			c.NotAfter.UTC().Format(time.RFC3339), p.RenewBefore)
	}
	return nil
}

// ErrWrongKey is a chain whose first certificate is for another key than
// the version's.
var ErrWrongKey = errors.New("the certificate is for another key than the version's")

// Expires is the earliest notAfter of the chain.
func (c Chain) Expires() time.Time {
	var t time.Time
	for _, cert := range c {
		if t.IsZero() || cert.NotAfter.Before(t) {
			t = cert.NotAfter
		}
	}
	return t
}

// DER returns the chain's certificates as DER.
func (c Chain) DER() [][]byte {
	out := make([][]byte, len(c))
	for i, cert := range c {
		out[i] = cert.Raw
	}
	return out
}
