package server

import (
	"encoding/json"

	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
)

// jwkJSON fixes the member order and omits what a key type does not have;
// only public members exist here, so no private member can ever be rendered.
type jwkJSON struct {
	Kty string `json:"kty"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	Crv string `json:"crv,omitempty"`
	X   string `json:"x,omitempty"`
	Y   string `json:"y,omitempty"`
	N   string `json:"n,omitempty"`
	E   string `json:"e,omitempty"`
}

// renderJWKS renders a key set as RFC 7517 JSON. The output depends only on
// msg, so the ETag computed over it is the same on every replica.
func renderJWKS(msg *signetv1.GetJWKSResponse) []byte {
	keys := make([]jwkJSON, 0, len(msg.GetKeys()))
	for _, k := range msg.GetKeys() {
		keys = append(keys, jwkJSON{Kty: k.GetKty(), Use: k.GetUse(), Alg: k.GetAlg(), Kid: k.GetKid(),
			Crv: k.GetCrv(), X: k.GetX(), Y: k.GetY(), N: k.GetN(), E: k.GetE()})
	}
	body, err := json.Marshal(struct {
		Keys []jwkJSON `json:"keys"`
	}{keys})
	if err != nil {
		panic(err) // strings only: cannot fail
	}
	return body
}

// renderOpenIDConfiguration renders the discovery document with the member
// names of OpenID Connect Discovery 1.0.
func renderOpenIDConfiguration(m *signetv1.GetOpenIDConfigurationResponse) []byte {
	body, err := json.Marshal(struct {
		Issuer    string   `json:"issuer"`
		JWKSURI   string   `json:"jwks_uri"`
		Algs      []string `json:"id_token_signing_alg_values_supported"`
		Responses []string `json:"response_types_supported"`
		Subjects  []string `json:"subject_types_supported"`
	}{m.GetIssuer(), m.GetJwksUri(), m.GetIdTokenSigningAlgValuesSupported(), m.GetResponseTypesSupported(), m.GetSubjectTypesSupported()})
	if err != nil {
		panic(err)
	}
	return body
}
