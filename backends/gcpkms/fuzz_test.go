package gcpkms

import (
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"

	"cloud.google.com/go/kms/apiv1/kmspb"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/signet-dev/signet/backends"
)

// FuzzParseURI feeds arbitrary backend URIs to the parser of the gcpkms:
// scheme's options, which opens nothing: it refuses them with
// InvalidArgument or returns a key ring name and options Open can use.
func FuzzParseURI(f *testing.F) {
	for _, s := range []string{
		"gcpkms:projects/p/locations/global/keyRings/signet",
		"gcpkms:projects/acme-prod/locations/europe-west1/keyRings/jwt?key_prefix=a-&protection_level=software&endpoint=127.0.0.1:8443",
		"gcpkms://projects/p", "gcpkms:projects/p/locations/l/keyRings/r?credentials=x", "gcpkms:projects/P/locations/l/keyRings/r",
		"gcpkms:projects/p/locations/l/keyRings/r?protection_level=external&key_prefix=%2F",
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
		if !keyRingPattern.MatchString(o.keyRing) || !prefixPattern.MatchString(o.prefix) ||
			(o.level != kmspb.ProtectionLevel_HSM && o.level != kmspb.ProtectionLevel_SOFTWARE) ||
			(o.endpoint != "" && !hostPort.MatchString(o.endpoint)) {
			t.Fatalf("%q: accepted %+v", raw, o)
		}
	})
}

// FuzzParsePublicKey feeds arbitrary text, as GetPublicKey's pem field
// carries it, to the decoder: it refuses it or returns a key of the ring's
// algorithm, never panics.
func FuzzParsePublicKey(f *testing.F) {
	for _, alg := range supported {
		key, _ := backends.GenerateKey(alg)
		der, _ := x509.MarshalPKIXPublicKey(key.Public())
		f.Add(string(alg), string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})))
	}
	f.Add("ES256", "-----BEGIN PUBLIC KEY-----\nMAA=\n-----END PUBLIC KEY-----\n")
	f.Fuzz(func(t *testing.T, algName, text string) {
		alg, err := backends.ParseAlgorithm(algName)
		if err != nil {
			return
		}
		pub, err := ParsePublicKey(alg, text)
		if err == nil {
			if err := alg.CheckPublicKey(pub); err != nil {
				t.Fatalf("accepted a key unfit for %s: %v", alg, err)
			}
		}
	})
}

// FuzzSignResponse feeds arbitrary AsymmetricSign answers to the integrity
// check: it accepts only an answer whose name, signature_crc32c and
// verified flag are right.
func FuzzSignResponse(f *testing.F) {
	good := &kmspb.AsymmetricSignResponse{Name: "n", Signature: []byte("sig"), SignatureCrc32C: wrapperspb.Int64(crc([]byte("sig"))), VerifiedDigestCrc32C: true}
	b, _ := proto.Marshal(good)
	f.Add(b)
	f.Add([]byte{})
	req := &kmspb.AsymmetricSignRequest{Name: "n", Digest: &kmspb.Digest{Digest: &kmspb.Digest_Sha256{Sha256: make([]byte, 32)}}}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var resp kmspb.AsymmetricSignResponse
		if proto.Unmarshal(raw, &resp) != nil {
			return
		}
		why := checkSignResponse(req, &resp)
		ok := resp.GetName() == "n" && resp.GetVerifiedDigestCrc32C() && resp.GetSignatureCrc32C() != nil &&
			resp.GetSignatureCrc32C().GetValue() == crc(resp.GetSignature())
		if (why == "") != ok {
			t.Fatalf("answer %v: check says %q", &resp, why)
		}
		if why != "" && strings.TrimSpace(why) == "" {
			t.Fatal("a blank reason")
		}
	})
}
