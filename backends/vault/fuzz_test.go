package vault

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"testing"

	"github.com/signet-dev/signet/backends"
)

// FuzzParsePublicKey feeds arbitrary public_key strings, as a Transit key
// read returns them, to the decoder: it must refuse or return a key of the
// ring's algorithm, never panic.
func FuzzParsePublicKey(f *testing.F) {
	for _, alg := range []backends.Algorithm{backends.ES256, backends.RS256, backends.EdDSA} {
		key, _ := backends.GenerateKey(alg)
		if alg.IsEdDSA() {
			f.Add(string(alg), base64.StdEncoding.EncodeToString(key.Public().(ed25519.PublicKey)))
			continue
		}
		der, _ := x509.MarshalPKIXPublicKey(key.Public())
		f.Add(string(alg), string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})))
	}
	f.Add("ES384", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
	f.Fuzz(func(t *testing.T, algName, s string) {
		alg, err := backends.ParseAlgorithm(algName)
		if err != nil {
			return
		}
		pub, err := parsePublicKey(alg, s)
		if err != nil {
			return
		}
		switch pub.(type) {
		case *ecdsa.PublicKey, *rsa.PublicKey, ed25519.PublicKey:
		default:
			t.Fatalf("accepted a %T", pub)
		}
		if err := alg.CheckPublicKey(pub); err != nil {
			t.Fatalf("accepted a key that is not %s's: %v", alg, err)
		}
	})
}
