package jose

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"

	gojose "github.com/go-jose/go-jose/v4"
)

// PublicKey is one key to publish: its kid, its JWS algorithm and the key.
type PublicKey struct {
	Kid       string
	Algorithm string
	Key       crypto.PublicKey
	// Certificates, if any, is the key's certificate chain, its own
	// certificate first: published as x5c (base64 DER, RFC 7517 section
	// 4.7) with x5t#S256, the SHA-256 of the first one. The caller has
	// checked that the first certifies Key.
	Certificates []*x509.Certificate
}

// JWKS is a key set as served: rendered once per change, not per request.
type JWKS struct {
	// Body is the RFC 7517 JSON. It depends only on the keys, so it and
	// its ETag are the same on every replica that publishes the same keys.
	Body         []byte
	ETag         string // strong entity tag, quoted
	CacheControl string
}

// NewJWKS renders keys (public members only: go-jose's JSONWebKey, which
// writes a private member only for a private key, and the keys here are
// public) with use "sig". maxAge is the Cache-Control max-age; staleIfError
// how long a cache may serve it while Signet cannot be reached.
func NewJWKS(keys []PublicKey, maxAge, staleIfError time.Duration) (*JWKS, error) {
	set := gojose.JSONWebKeySet{Keys: make([]gojose.JSONWebKey, 0, len(keys))}
	for _, k := range keys {
		jwk := gojose.JSONWebKey{Key: k.Key, KeyID: k.Kid, Algorithm: k.Algorithm, Use: "sig"}
		if len(k.Certificates) > 0 {
			sum := sha256.Sum256(k.Certificates[0].Raw)
			jwk.Certificates, jwk.CertificateThumbprintSHA256 = k.Certificates, sum[:]
		}
		set.Keys = append(set.Keys, jwk)
	}
	body, err := json.Marshal(set)
	if err != nil {
		return nil, fmt.Errorf("rendering the JWKS: %w", err)
	}
	return newDocument(body, maxAge, staleIfError), nil
}

// NewSPIFFEBundle renders a SPIFFE bundle (SPIFFE Trust Domain and Bundle,
// section 4): keys as JWT authorities (use "jwt-svid", kid set), the
// sequence number and the refresh hint (whole seconds, at least one). Like
// the JWKS it depends only on what it is given, so replicas that agree on
// the keys and the sequence serve the same bytes and ETag.
func NewSPIFFEBundle(keys []PublicKey, sequence uint64, refreshHint, maxAge, staleIfError time.Duration) (*JWKS, error) {
	doc := struct {
		Keys        []gojose.JSONWebKey `json:"keys"`
		RefreshHint int64               `json:"spiffe_refresh_hint"`
		Sequence    uint64              `json:"spiffe_sequence"`
	}{Keys: make([]gojose.JSONWebKey, 0, len(keys)), RefreshHint: max(1, int64(refreshHint/time.Second)), Sequence: sequence}
	for _, k := range keys {
		doc.Keys = append(doc.Keys, gojose.JSONWebKey{Key: k.Key, KeyID: k.Kid, Algorithm: k.Algorithm, Use: "jwt-svid"})
	}
	body, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("rendering the SPIFFE bundle: %w", err)
	}
	return newDocument(body, maxAge, staleIfError), nil
}

// newDocument is a rendered key document with its strong ETag and
// Cache-Control.
func newDocument(body []byte, maxAge, staleIfError time.Duration) *JWKS {
	sum := sha256.Sum256(body)
	return &JWKS{
		Body: body,
		ETag: `"` + base64.RawURLEncoding.EncodeToString(sum[:18]) + `"`,
		CacheControl: fmt.Sprintf("public, max-age=%d, stale-if-error=%d",
			int(maxAge.Seconds()), int(staleIfError.Seconds())),
	}
}

// Discovery renders an OpenID Connect Discovery 1.0 document for a
// JWT issuer: its issuer, jwks_uri and signing algorithms.
func Discovery(issuer, jwksURI string, algs []string) []byte {
	body, err := json.Marshal(struct {
		Issuer    string   `json:"issuer"`
		JWKSURI   string   `json:"jwks_uri"`
		Algs      []string `json:"id_token_signing_alg_values_supported"`
		Responses []string `json:"response_types_supported"`
		Subjects  []string `json:"subject_types_supported"`
	}{issuer, jwksURI, algs, []string{"id_token"}, []string{"public"}})
	if err != nil {
		panic(err) // strings only: cannot fail
	}
	return body
}
