package awskms

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"math"
	"net/url"
	"strings"
	"testing"

	"github.com/signet-dev/signet/backends"
)

// FuzzParseURI feeds arbitrary backend URIs to the parser of the awskms:
// scheme's options, which opens nothing: it refuses them or returns
// options Open can use as they are.
func FuzzParseURI(f *testing.F) {
	for _, s := range []string{
		"awskms:?region=eu-west-1",
		"awskms:?region=us-east-1&endpoint=" + url.QueryEscape("http://127.0.0.1:4566") + "&alias_prefix=jwt&sign_rate=200&sign_burst=5&scan_rate=100000",
		"awskms:?profile=prod", "awskms:?alias_prefix=/x/", "awskms:?alias_prefix=aws", "awskms:?sign_rate=NaN",
		"awskms:?scan_rate=1e309", "awskms:?endpoint=ftp://x", "awskms:?region=us-east-1&pin=1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, _, err := backends.ParseURI(raw)
		if err != nil || u.Scheme != Scheme {
			return
		}
		o, err := parseURI(u)
		if err != nil {
			if backends.KindOf(err) != backends.KindInvalidArgument {
				t.Fatalf("%q: refused with %v, want InvalidArgument", raw, err)
			}
			return
		}
		if !(o.signRate > 0) || math.IsInf(o.signRate, 0) || o.signBurst < 1 || !(o.scanRate > 0) || o.scanRate > 1e6 {
			t.Fatalf("%q: rates %v/s burst %d, scan %v/s", raw, o.signRate, o.signBurst, o.scanRate)
		}
		if o.prefix == "" || strings.HasPrefix(o.prefix, "/") || strings.HasSuffix(o.prefix, "/") || strings.HasPrefix(o.prefix, "aws") {
			t.Fatalf("%q: alias prefix %q", raw, o.prefix)
		}
		if o.endpoint != "" {
			if eu, err := url.Parse(o.endpoint); err != nil || eu.Host == "" {
				t.Fatalf("%q: endpoint %q", raw, o.endpoint)
			}
		}
	})
}

// FuzzPublicKeyDER feeds arbitrary bytes, as KMS's GetPublicKey answers
// them, to the decoder: it refuses them or returns a key of the ring's
// algorithm, never panics.
func FuzzPublicKeyDER(f *testing.F) {
	for _, alg := range []backends.Algorithm{backends.ES256, backends.ES512, backends.RS256, backends.EdDSA} {
		key, _ := backends.GenerateKey(alg)
		der, _ := x509.MarshalPKIXPublicKey(key.Public())
		f.Add(string(alg), der)
	}
	f.Add("ES384", []byte{0x30, 0x03, 0x02, 0x01, 0x00})
	f.Fuzz(func(t *testing.T, algName string, der []byte) {
		alg, err := backends.ParseAlgorithm(algName)
		if err != nil {
			return
		}
		checkPublicKey(t, alg, der)
	})
}

func checkPublicKey(t *testing.T, alg backends.Algorithm, der []byte) {
	t.Helper()
	pub, err := parsePublicKey(alg, der, "alias/fuzz/r/1")
	if err != nil {
		if k := backends.KindOf(err); k != backends.KindUnknown && k != backends.KindFailedPrecondition {
			t.Fatalf("refused with %v", err)
		}
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
}

// FuzzDescription feeds arbitrary key descriptions, as DescribeKey answers
// them, to the reader of the public key Signet keeps there: it finds none,
// or bytes that the public key decoder then judges; and what describe
// writes, it reads back exactly.
func FuzzDescription(f *testing.F) {
	b := &Backend{prefix: "signet"}
	ring := backends.KeyRing{Name: "default", Algorithm: backends.ES256}
	key, _ := backends.GenerateKey(backends.ES256)
	der, _ := x509.MarshalPKIXPublicKey(key.Public())
	f.Add(describe(b.descriptionPrefix(ring), 1, backends.ES256, der), "ES256", der)
	f.Add("Signet key ring default, version 2 (ES256)", "ES256", []byte{})
	f.Add("Signet key ring x, version 1 (RS256);"+publicKeyMarker+"!!!", "RS256", []byte{1})
	f.Add("made by hand", "EdDSA", []byte(nil))
	f.Fuzz(func(t *testing.T, description, algName string, der []byte) {
		alg, err := backends.ParseAlgorithm(algName)
		if err != nil {
			return
		}
		if got, ok := publicKeyFromDescription(description); ok {
			checkPublicKey(t, alg, got)
		}
		written := describe(b.descriptionPrefix(ring), 3, alg, der)
		if got, ok := publicKeyFromDescription(written); !ok || string(got) != string(der) {
			t.Fatalf("wrote %x into %q, read back %x, %v", der, written, got, ok)
		}
	})
}
