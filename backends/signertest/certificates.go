package signertest

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"testing"
	"time"

	"github.com/signet-dev/signet/backends"
)

// selfSigned makes a leaf certificate for v signed by v itself through the
// backend (backends.MessageSigner): the key never leaves it.
func selfSigned(t *testing.T, s backends.Signer, ring backends.KeyRing, v backends.Version, cn string) []byte {
	t.Helper()
	der, err := makeSelfSigned(ctxFor(t), s, ring, v, cn)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func makeSelfSigned(ctx context.Context, s backends.Signer, ring backends.KeyRing, v backends.Version, cn string) ([]byte, error) {
	return makeCertificate(ctx, s, ring, v, cn, nil)
}

// makeCertificate makes a certificate for v's key, signed by v through the
// backend: a leaf issued by parent, or with parent nil a self-signed leaf,
// or with parent == caTemplate a self-signed CA certificate.
func makeCertificate(ctx context.Context, s backends.Signer, ring backends.KeyRing, v backends.Version, cn string, parent *x509.Certificate) ([]byte, error) {
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, BasicConstraintsValid: true,
		SignatureAlgorithm: ring.Algorithm.X509SignatureAlgorithm()}
	switch parent {
	case nil:
		parent = tmpl
	case caTemplate:
		tmpl.IsCA, tmpl.KeyUsage = true, x509.KeyUsageCertSign
		parent = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, v.PublicKey,
		&backends.MessageSigner{Ctx: ctx, Backend: s, Ring: ring, Version: v})
	if err != nil {
		return nil, fmt.Errorf("a certificate signed through the backend: %w", err)
	}
	c, _ := x509.ParseCertificate(der)
	if err := c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature); err != nil {
		return nil, fmt.Errorf("the certificate the backend signed does not verify: %w", err)
	}
	return der, nil
}

// caTemplate asks makeCertificate for a CA certificate.
var caTemplate = &x509.Certificate{}

// twoCertificates is a chain of two certificates for v's key: a leaf and
// the CA certificate (of the same key) that issued it, so that a write of
// the chain can be interrupted between its certificates.
func twoCertificates(ctx context.Context, s backends.Signer, ring backends.KeyRing, v backends.Version) ([][]byte, error) {
	caDER, err := makeCertificate(ctx, s, ring, v, "crash CA", caTemplate)
	if err != nil {
		return nil, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	leaf, err := makeCertificate(ctx, s, ring, v, "crash leaf", ca)
	if err != nil {
		return nil, err
	}
	return [][]byte{leaf, caDER}, nil
}

// checkCrashedChain: after a crash in PutCertificates and the recovery,
// the version has the whole chain the crashed writer stored, or none,
// never a part of it; and a chain can be stored for it now.
func checkCrashedChain(t *testing.T, live backends.Signer, ring backends.KeyRing, v backends.Version) {
	t.Helper()
	switch len(v.Certificates) {
	case 0:
	case 2:
		for i, der := range v.Certificates {
			c, err := x509.ParseCertificate(der)
			if err != nil || !publicEqual(c.PublicKey, v.PublicKey) {
				t.Errorf("certificate %d of the chain left by the crash is not one the writer made (%v)", i, err)
			}
		}
	default:
		t.Fatalf("after the crash the version has %d certificates: a part of the 2 the writer stored", len(v.Certificates))
	}
	chain := [][]byte{selfSigned(t, live, ring, v, "after the crash")}
	stored, err := live.(backends.CertificateStore).PutCertificates(ctxFor(t), ring, v.ID, v.Certificates, chain)
	if err != nil || !backends.SameChain(stored, chain) {
		t.Errorf("storing a chain after the recovery: %v", err)
	}
}

// testCertificates: a backend that stores certificate chains
// (backends.CertificateStore) keeps one per version, returns it with the
// version from Versions (to another instance too), and replaces it only
// when the caller names the chain in force.
func (h Harness) testCertificates(t *testing.T, alg backends.Algorithm) {
	s := h.open(t)
	store, ok := s.(backends.CertificateStore)
	if !ok {
		t.Fatal("the backend does not store certificate chains") // Run adds this case only for those that do
	}
	ring := newRing(alg)
	v := CreateVersion(t, s, ring, "")
	a := [][]byte{selfSigned(t, s, ring, v, "chain a")}
	b := [][]byte{selfSigned(t, s, ring, v, "chain b")}
	ctx := ctxFor(t)
	stored, err := store.PutCertificates(ctx, ring, v.ID, nil, a)
	if err != nil || !backends.SameChain(stored, a) {
		t.Fatalf("first PutCertificates: %v (stored the given chain: %v)", err, backends.SameChain(stored, a))
	}
	if stored, err = store.PutCertificates(ctx, ring, v.ID, nil, b); err != nil || !backends.SameChain(stored, a) {
		t.Fatalf("PutCertificates naming no chain when one is stored: %v; it must keep and return the stored one", err)
	}
	other := h.open(t)
	vs, err := other.Versions(ctx, ring)
	if err != nil || len(vs) != 1 || !backends.SameChain(vs[0].Certificates, a) {
		t.Fatalf("another instance's Versions does not return the stored chain (err %v)", err)
	}
	if stored, err = store.PutCertificates(ctx, ring, v.ID, a, b); err != nil || !backends.SameChain(stored, b) {
		t.Fatalf("PutCertificates replacing the chain in force: %v", err)
	}
	if vs, err = other.Versions(ctx, ring); err != nil || !backends.SameChain(vs[0].Certificates, b) {
		t.Fatalf("Versions does not return the replacing chain (err %v)", err)
	}
	v2 := CreateVersion(t, s, ring, v.ID)
	if vs, err = s.Versions(ctx, ring); err != nil || len(vs) != 2 || vs[1].ID != v2.ID || vs[1].Certificates != nil {
		t.Fatalf("a new version has a certificate chain before one is stored (err %v)", err)
	}
}
