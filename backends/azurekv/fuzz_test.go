package azurekv

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/json"
	"math/big"
	"net/url"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"

	"github.com/signet-dev/signet/backends"
)

// FuzzParseURI feeds arbitrary backend URIs to the parser of the azurekv://
// scheme's options, which opens nothing: it refuses them with
// InvalidArgument or returns an https vault URL and options Open can use.
func FuzzParseURI(f *testing.F) {
	for _, s := range []string{
		"azurekv://signet.vault.azure.net/", "azurekv://pool.managedhsm.azure.net/?key_prefix=jwt-",
		"azurekv://127.0.0.1:8443/?hsm=true&disable_instance_discovery=true", "azurekv://v.vault.azure.net/keys/x",
		"azurekv://u:p@v.vault.azure.net/", "azurekv:v", "azurekv://v.vault.azure.net/?key_prefix=a_b",
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
		v, err := url.Parse(o.vault)
		if err != nil || v.Scheme != "https" || v.Host == "" || v.Path != "/" || v.User != nil || !prefixPattern.MatchString(o.prefix) {
			t.Fatalf("%q: accepted vault %q prefix %q", raw, o.vault, o.prefix)
		}
	})
}

// FuzzPublicKeyFromJWK feeds arbitrary JSON web keys, as Key Vault answers
// them, to the decoder: it refuses them or returns an ECDSA key on the
// named curve or an RSA key, never panics.
func FuzzPublicKeyFromJWK(f *testing.F) {
	for _, s := range []string{
		`{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}`,
		`{"kty":"RSA-HSM","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB"}`,
		`{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}`, `{"kty":"EC","crv":"P-521","x":"","y":""}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		var k azkeys.JSONWebKey
		if json.Unmarshal([]byte(raw), &k) != nil {
			return
		}
		pub, err := PublicKeyFromJWK(&k)
		if err != nil {
			return
		}
		switch p := pub.(type) {
		case *ecdsa.PublicKey:
			if k.Crv == nil || !strings.HasSuffix(p.Curve.Params().Name, strings.TrimPrefix(string(*k.Crv), "P-")) {
				t.Fatalf("%s: a key on %s", raw, p.Curve.Params().Name)
			}
		case *rsa.PublicKey:
			if p.E < 3 || p.N.Cmp(big.NewInt(0)) <= 0 {
				t.Fatalf("%s: RSA key with E=%d", raw, p.E)
			}
		default:
			t.Fatalf("%s: a %T", raw, pub)
		}
	})
}
