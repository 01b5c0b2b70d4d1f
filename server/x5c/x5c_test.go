package x5c

import (
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/signet-dev/signet/backends"
)

var now = time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)

func profile(cn string) Profile {
	return Profile{Subject: pkix.Name{CommonName: cn}, Validity: 48 * time.Hour, RenewBefore: 12 * time.Hour}
}

func key(t *testing.T, alg backends.Algorithm) crypto.Signer {
	t.Helper()
	k, err := backends.GenerateKey(alg)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// For every algorithm as CA and as leaf: the CA certificate, a leaf it
// issues and a self-signed leaf parse as chains for their keys, with the
// bounds Signet keeps.
func TestChains(t *testing.T) {
	for _, alg := range []backends.Algorithm{backends.ES256, backends.ES384, backends.ES512, backends.RS256, backends.PS384, backends.EdDSA} {
		t.Run(string(alg), func(t *testing.T) {
			caKey, leafKey := key(t, alg), key(t, backends.ES256)
			caDER, err := CA(caKey, alg, profile("ca"), now)
			if err != nil {
				t.Fatal(err)
			}
			ca, err := Parse([][]byte{caDER}, caKey.Public(), now)
			if err != nil {
				t.Fatal(err)
			}
			if !ca[0].IsCA || !ca[0].MaxPathLenZero || ca[0].KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
				t.Errorf("CA certificate: CA %v, path length zero %v, key usage %v", ca[0].IsCA, ca[0].MaxPathLenZero, ca[0].KeyUsage)
			}
			leafDER, err := Leaf(leafKey.Public(), ca[0], caKey, alg, profile("leaf"), now)
			if err != nil {
				t.Fatal(err)
			}
			chain, err := Parse([][]byte{leafDER, caDER}, leafKey.Public(), now)
			if err != nil {
				t.Fatal(err)
			}
			if err := CheckLeaf(chain[0], profile("leaf"), now); err != nil {
				t.Errorf("a leaf Signet made breaks its own bounds: %v", err)
			}
			if chain[0].SignatureAlgorithm != alg.X509SignatureAlgorithm() {
				t.Errorf("the leaf is signed with %v, want %v", chain[0].SignatureAlgorithm, alg.X509SignatureAlgorithm())
			}
			self, err := SelfSigned(caKey, alg, profile("self"), now)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Parse([][]byte{self}, caKey.Public(), now); err != nil {
				t.Errorf("self-signed: %v", err)
			}
		})
	}
}

func TestParseRefuses(t *testing.T) {
	caKey, leafKey, other := key(t, backends.ES256), key(t, backends.ES256), key(t, backends.ES256)
	caDER, _ := CA(caKey, backends.ES256, profile("ca"), now)
	ca, _ := x509.ParseCertificate(caDER)
	otherCA, _ := CA(other, backends.ES256, profile("ca"), now) // same name, another key
	leaf, _ := Leaf(leafKey.Public(), ca, caKey, backends.ES256, profile("leaf"), now)
	for _, tc := range []struct {
		name  string
		chain [][]byte
		pub   crypto.PublicKey
		at    time.Time
		want  string
	}{
		{"for another key", [][]byte{leaf, caDER}, other.Public(), now, ErrWrongKey.Error()},
		{"issuer that did not sign", [][]byte{leaf, otherCA}, leafKey.Public(), now, "not signed by"},
		{"expired", [][]byte{leaf, caDER}, leafKey.Public(), now.Add(49 * time.Hour), "not now"},
		{"not yet valid", [][]byte{leaf, caDER}, leafKey.Public(), now.Add(-time.Hour), "not now"},
		{"garbage", [][]byte{[]byte("not DER")}, leafKey.Public(), now, "certificate 0"},
		{"empty", nil, leafKey.Public(), now, "no certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.chain, tc.pub, tc.at)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Parse: %v, want an error saying %q", err, tc.want)
			}
			if tc.name == "for another key" && !errors.Is(err, ErrWrongKey) {
				t.Errorf("a chain for another key is not ErrWrongKey: %v", err)
			}
		})
	}
}

// A leaf never outlives its CA certificate, and an expired CA issues none.
func TestLeafWithinItsCA(t *testing.T) {
	caKey, leafKey := key(t, backends.ES256), key(t, backends.ES256)
	p := profile("ca")
	p.Validity = 24 * time.Hour
	caDER, _ := CA(caKey, backends.ES256, p, now)
	ca, _ := x509.ParseCertificate(caDER)
	der, err := Leaf(leafKey.Public(), ca, caKey, backends.ES256, profile("leaf"), now) // asks for 48h
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	if !leaf.NotAfter.Equal(ca.NotAfter) {
		t.Errorf("the leaf's notAfter %v is not capped at the CA's %v", leaf.NotAfter, ca.NotAfter)
	}
	if _, err := Leaf(leafKey.Public(), ca, caKey, backends.ES256, profile("leaf"), now.Add(25*time.Hour)); err == nil {
		t.Error("an expired CA certificate issued a leaf")
	}
}

// CheckLeaf refuses what an outside issuer (Vault PKI) may hand back beyond
// Signet's bounds.
func TestCheckLeaf(t *testing.T) {
	k := key(t, backends.ES256)
	ca, _ := CA(k, backends.ES256, profile("ca"), now)
	caCert, _ := x509.ParseCertificate(ca)
	if err := CheckLeaf(caCert, profile("x"), now); err == nil || !strings.Contains(err.Error(), "CA certificate") {
		t.Errorf("a CA certificate as leaf: %v", err)
	}
	short := profile("x")
	short.Validity = 13 * time.Hour
	der, _ := SelfSigned(k, backends.ES256, short, now)
	c, _ := x509.ParseCertificate(der)
	if err := CheckLeaf(c, profile("x"), now.Add(2*time.Hour)); err == nil || !strings.Contains(err.Error(), "renew_before") {
		t.Errorf("a leaf expiring within renew_before: %v", err)
	}
}

// A certification request is signed by the key it names.
func TestCSR(t *testing.T) {
	for _, alg := range []backends.Algorithm{backends.ES384, backends.PS256, backends.EdDSA} {
		k := key(t, alg)
		der, err := CSR(k, alg, profile("req"))
		if err != nil {
			t.Fatal(err)
		}
		req, err := x509.ParseCertificateRequest(der)
		if err != nil || req.CheckSignature() != nil || !k.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(req.PublicKey) {
			t.Errorf("%s: the request does not verify for its key: %v", alg, err)
		}
	}
}
