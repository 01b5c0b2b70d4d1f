package backends

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"encoding/asn1"
	"fmt"
	"math/big"
	"testing"
)

func TestECDSASignatureFromDER(t *testing.T) {
	t.Parallel()
	for _, a := range []Algorithm{ES256, ES384, ES512} {
		k, _ := ecdsa.GenerateKey(a.Curve(), rand.Reader)
		digest := sha256.Sum256([]byte("x"))
		der, _ := ecdsa.SignASN1(rand.Reader, k, digest[:])
		raw, err := ECDSASignatureFromDER(a, der)
		if err != nil || len(raw) != a.SignatureSize() {
			t.Fatalf("%s: %d bytes, %v", a, len(raw), err)
		}
		n := len(raw) / 2
		r, s := new(big.Int).SetBytes(raw[:n]), new(big.Int).SetBytes(raw[n:])
		if !ecdsa.Verify(&k.PublicKey, digest[:], r, s) {
			t.Errorf("%s: converted signature does not verify", a)
		}
	}
	small, _ := asn1.Marshal(struct{ R, S *big.Int }{big.NewInt(1), big.NewInt(2)})
	if raw, err := ECDSASignatureFromDER(ES256, small); err != nil || !bytes.Equal(raw, append(append(make([]byte, 31), 1), append(make([]byte, 31), 2)...)) {
		t.Errorf("small values are not left-padded: %x, %v", raw, err)
	}
	bad := [][]byte{nil, {0x30}, append(small, 0), mustDER(big.NewInt(0), big.NewInt(1)), mustDER(big.NewInt(-1), big.NewInt(1)),
		mustDER(new(big.Int).Lsh(big.NewInt(1), 256), big.NewInt(1))}
	for _, b := range bad {
		if _, err := ECDSASignatureFromDER(ES256, b); err == nil {
			t.Errorf("accepted %x", b)
		}
	}
}

// SignWithKey's converter gives what ECDSASignatureFromDER gives, result
// or error, on real signatures and on the malformed ones above.
func TestECDSADERToJWSIsFromDER(t *testing.T) {
	t.Parallel()
	ders := [][]byte{nil, {0x30}, mustDER(big.NewInt(1), big.NewInt(2)), mustDER(big.NewInt(0), big.NewInt(1)),
		mustDER(big.NewInt(-1), big.NewInt(1)), mustDER(new(big.Int).Lsh(big.NewInt(1), 256), big.NewInt(1)),
		mustDER(new(big.Int).Lsh(big.NewInt(1), 255), big.NewInt(1))}
	for _, a := range []Algorithm{ES256, ES384, ES512} {
		k, _ := ecdsa.GenerateKey(a.Curve(), rand.Reader)
		for range 50 {
			digest := sha256.Sum256([]byte("x"))
			der, _ := ecdsa.SignASN1(rand.Reader, k, digest[:])
			ders = append(ders, der)
		}
	}
	for _, der := range ders {
		for _, a := range []Algorithm{ES256, ES384, ES512, EdDSA} {
			raw, err := ECDSASignatureFromDER(a, der)
			fast, ferr := ecdsaDERToJWS(a, der)
			if !bytes.Equal(fast, raw) || fmt.Sprint(ferr) != fmt.Sprint(err) {
				t.Errorf("%s %x: ecdsaDERToJWS = %x, %v; ECDSASignatureFromDER = %x, %v", a, der, fast, ferr, raw, err)
			}
		}
	}
}

func mustDER(r, s *big.Int) []byte {
	b, _ := asn1.Marshal(struct{ R, S *big.Int }{r, s})
	return b
}

// FuzzECDSASignatureFromDER: whatever it accepts is exactly the DER of the
// R||S it returns, at the exact length.
func FuzzECDSASignatureFromDER(f *testing.F) {
	f.Add(mustDER(big.NewInt(1), big.NewInt(2)), uint8(0))
	f.Add([]byte{0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x02}, uint8(2))
	f.Add([]byte{0x30, 0x80}, uint8(1))
	f.Fuzz(func(t *testing.T, der []byte, which uint8) {
		a := []Algorithm{ES256, ES384, ES512}[int(which)%3]
		raw, err := ECDSASignatureFromDER(a, der)
		fast, ferr := ecdsaDERToJWS(a, der)
		if !bytes.Equal(fast, raw) || fmt.Sprint(ferr) != fmt.Sprint(err) {
			t.Fatalf("ecdsaDERToJWS = %x, %v; ECDSASignatureFromDER = %x, %v", fast, ferr, raw, err)
		}
		if err != nil {
			return
		}
		if len(raw) != a.SignatureSize() {
			t.Fatalf("%d bytes for %s", len(raw), a)
		}
		n := len(raw) / 2
		again := mustDER(new(big.Int).SetBytes(raw[:n]), new(big.Int).SetBytes(raw[n:]))
		if !bytes.Equal(again, der) {
			t.Fatalf("accepted non-canonical DER %x (canonical %x)", der, again)
		}
	})
}

// Verify accepts what SignWithKey makes with the matching key, and nothing
// made with another key or over another input.
func TestVerify(t *testing.T) {
	t.Parallel()
	for _, a := range AllAlgorithms {
		t.Run(string(a), func(t *testing.T) {
			t.Parallel()
			key, err := GenerateKey(a)
			if err != nil {
				t.Fatal(err)
			}
			other, _ := GenerateKey(a)
			input := []byte("eyJhbGciOiJ4In0.eyJzdWIiOiJ5In0")
			sig, err := SignWithKey(a, key, input)
			if err != nil {
				t.Fatal(err)
			}
			if err := a.Verify(key.Public(), input, sig); err != nil {
				t.Errorf("its own signature: %v", err)
			}
			if err := a.Verify(other.Public(), input, sig); err == nil {
				t.Error("verified with another key")
			}
			if err := a.Verify(key.Public(), append(input, 'x'), sig); err == nil {
				t.Error("verified over another input")
			}
			if err := a.Verify(key.Public(), input, sig[:len(sig)-1]); err == nil {
				t.Error("verified a truncated signature")
			}
		})
	}
}
