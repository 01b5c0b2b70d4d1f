package signertest

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"

	"github.com/signet-dev/signet/backends"
)

// selfSigned makes a leaf certificate for v signed by v itself through the
// backend (backends.MessageSigner): the key never leaves it.
func selfSigned(t *testing.T, s backends.Signer, ring backends.KeyRing, v backends.Version, cn string) []byte {
	t.Helper()
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, BasicConstraintsValid: true,
		SignatureAlgorithm: ring.Algorithm.X509SignatureAlgorithm()}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, v.PublicKey,
		&backends.MessageSigner{Ctx: ctxFor(t), Backend: s, Ring: ring, Version: v})
	if err != nil {
		t.Fatalf("a certificate signed through the backend: %v", err)
	}
	c, _ := x509.ParseCertificate(der)
	if err := c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature); err != nil {
		t.Fatalf("the certificate the backend signed does not verify: %v", err)
	}
	return der
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
