package vault

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"strings"
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

// FuzzParseURI feeds arbitrary backend URIs to the parser of the vault:
// scheme's options, which opens nothing: it refuses them or returns
// options Open can use as they are.
func FuzzParseURI(f *testing.F) {
	for _, s := range []string{
		"vault://127.0.0.1:8200/transit?scheme=http&key_prefix=signet-",
		"vault:///transit",
		"vault://vault.example:8200/transit?key.myring=existing&batch_size=4",
		"vault://h/transit?auth=approle&role_id=r&secret_id_file=/run/secret&namespace=team",
		"vault://h/pki/?ca_file=/etc/ca.pem&client_cert=c&client_key=k&tls_server_name=vault&scheme=https",
		"vault://h/transit?batch_size=1001", "vault://h/transit?scheme=ftp", "vault://h/transit?pin=1",
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
		if o.mount == "" || strings.HasPrefix(o.mount, "/") || strings.HasSuffix(o.mount, "/") {
			t.Fatalf("%q: mount %q", raw, o.mount)
		}
		if o.batchSize < 1 || o.batchSize > 1000 {
			t.Fatalf("%q: batch size %d", raw, o.batchSize)
		}
		if o.address != "" && !strings.HasPrefix(o.address, "https://") && !strings.HasPrefix(o.address, "http://") {
			t.Fatalf("%q: address %q", raw, o.address)
		}
		for ring, name := range o.keyNames {
			if name == "" {
				t.Fatalf("%q: ring %q has an empty key name", raw, ring)
			}
		}
	})
}

// FuzzDecodeSignBatch feeds arbitrary answers to a batch sign request, as
// the Vault client decodes them, to the decoder: for each input it returns
// a signature of the algorithm's size or an error, never both, never
// neither, and never panics.
func FuzzDecodeSignBatch(f *testing.F) {
	sig := func(n int) string { return base64.RawURLEncoding.EncodeToString(make([]byte, n)) }
	for _, seed := range []struct {
		alg     string
		version int
		n       int
		answer  string
	}{
		{"ES256", 1, 1, `{"batch_results":[{"signature":"vault:v1:` + sig(64) + `","key_version":1}]}`},
		{"EdDSA", 2, 2, `{"batch_results":[{"signature":"vault:v2:` + sig(64) + `","key_version":2},{"error":"encryption key version 1 is less than minimum"}]}`},
		{"RS256", 3, 1, `{"batch_results":[{"signature":"vault:v3:` + sig(256) + `","key_version":3}]}`},
		{"ES384", 1, 1, `{"batch_results":[{"signature":"vault:v2:` + sig(96) + `","key_version":2}]}`},
		{"ES256", 1, 1, `{"batch_results":[{"signature":"vault:v1:!!","key_version":1}]}`},
		{"ES256", 1, 2, `{"batch_results":[]}`},
		{"ES256", 1, 1, `{"batch_results":[{"key_version":"1"}]}`},
		{"ES256", 1, 1, `null`},
	} {
		f.Add(seed.alg, seed.version, seed.n, []byte(seed.answer))
	}
	f.Fuzz(func(t *testing.T, algName string, version, n int, answer []byte) {
		alg, err := backends.ParseAlgorithm(algName)
		if err != nil || n < 0 || n > 1000 {
			return
		}
		var data map[string]any
		dec := json.NewDecoder(bytes.NewReader(answer))
		dec.UseNumber() // as the Vault client decodes answers
		if dec.Decode(&data) != nil {
			return
		}
		sigs, errs, err := decodeSignBatch(data, alg, version, n, "fuzz")
		if err != nil {
			if sigs != nil || errs != nil {
				t.Fatal("an error for the batch, and results too")
			}
			return
		}
		if len(sigs) != n || len(errs) != n {
			t.Fatalf("%d signatures and %d errors for %d inputs", len(sigs), len(errs), n)
		}
		for i := range n {
			if (sigs[i] == nil) == (errs[i] == nil) {
				t.Fatalf("input %d: signature %x and error %v", i, sigs[i], errs[i])
			}
			if want := alg.SignatureSize(); sigs[i] != nil && (len(sigs[i]) == 0 || want != 0 && len(sigs[i]) != want) {
				t.Fatalf("input %d: a %d-byte %s signature", i, len(sigs[i]), alg)
			}
		}
	})
}
