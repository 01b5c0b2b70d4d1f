package backends

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"strings"
	"testing"
)

// A JWS ECDSA signature converts to the DER X.509 uses and back, and the
// DER verifies with crypto/ecdsa.
func TestECDSASignatureToDER(t *testing.T) {
	for _, alg := range []Algorithm{ES256, ES384, ES512} {
		k, _ := GenerateKey(alg)
		input := []byte("header.payload")
		sig, err := SignWithKey(alg, k, input)
		if err != nil {
			t.Fatal(err)
		}
		der, err := ECDSASignatureToDER(alg, sig)
		if err != nil {
			t.Fatal(err)
		}
		h := alg.Hash().New()
		h.Write(input)
		if !ecdsa.VerifyASN1(k.Public().(*ecdsa.PublicKey), h.Sum(nil), der) {
			t.Errorf("%s: the DER signature does not verify", alg)
		}
		if back, err := ECDSASignatureFromDER(alg, der); err != nil || string(back) != string(sig) {
			t.Errorf("%s: DER back to JWS: %v", alg, err)
		}
	}
	if _, err := ECDSASignatureToDER(ES256, make([]byte, 63)); err == nil {
		t.Error("a 63-byte ES256 signature was converted")
	}
	if _, err := ECDSASignatureToDER(RS256, make([]byte, 64)); err == nil {
		t.Error("an RS256 signature was converted as ECDSA")
	}
}

// MessageSigner signs only what the ring's algorithm signs, and never a
// digest made elsewhere; refusals never reach the backend (nil here).
func TestMessageSignerRefuses(t *testing.T) {
	k, _ := GenerateKey(ES256)
	ms := &MessageSigner{Ring: KeyRing{Name: "r", Algorithm: ES256}, Version: Version{ID: "1", PublicKey: k.Public()}}
	digest := sha256.Sum256([]byte("x"))
	if _, err := ms.Sign(rand.Reader, digest[:], crypto.SHA256); err == nil {
		t.Error("Sign with a digest was accepted")
	}
	if _, err := ms.SignMessage(rand.Reader, []byte("tbs"), crypto.SHA384); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("an ES256 ring asked for SHA-384: %v", err)
	}
	pss := &MessageSigner{Ring: KeyRing{Name: "r", Algorithm: PS256}}
	if _, err := pss.SignMessage(rand.Reader, []byte("tbs"), crypto.SHA256); err == nil {
		t.Error("a PS256 ring signed PKCS #1 v1.5")
	}
	if _, err := pss.SignMessage(rand.Reader, []byte("tbs"), &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: 20}); err == nil {
		t.Error("a PS256 ring signed with a 20-byte salt")
	}
	rs := &MessageSigner{Ring: KeyRing{Name: "r", Algorithm: RS256}}
	if _, err := rs.SignMessage(rand.Reader, []byte("tbs"), &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: rsa.PSSSaltLengthEqualsHash}); err == nil {
		t.Error("an RS256 ring signed RSA-PSS")
	}
}

func TestPEMChain(t *testing.T) {
	chain := [][]byte{[]byte("one"), []byte("two")}
	back, err := DecodePEMChain(EncodePEMChain(chain))
	if err != nil || !SameChain(back, chain) {
		t.Errorf("round trip: %v", err)
	}
	if c, err := DecodePEMChain(nil); err != nil || c != nil {
		t.Errorf("empty: %v %v", c, err)
	}
	if _, err := DecodePEMChain([]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")); err == nil {
		t.Error("a private key block was taken for a certificate")
	}
	if _, err := DecodePEMChain(append(EncodePEMChain(chain), "trailing"...)); err == nil {
		t.Error("trailing bytes were ignored")
	}
	if SameChain(chain, chain[:1]) || SameChain(chain, [][]byte{[]byte("one"), []byte("tw0")}) {
		t.Error("SameChain of different chains")
	}
}
