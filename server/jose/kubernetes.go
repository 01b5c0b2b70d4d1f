package jose

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"time"
	"unicode/utf8"
)

// KubernetesClaims is what Signet reads of the claims kube-apiserver asks
// it to sign through the ExternalJWTSigner API. It signs the encoded
// claims exactly as sent; these fields are checked and audited.
type KubernetesClaims struct {
	Subject  string
	Audience []string
	JTI      string
	IssuedAt time.Time
	Expiry   time.Time
	// Payload is the decoded claims (the audit log keeps their SHA-256).
	Payload []byte
}

// Bounds of the claims an ExternalJWTSigner Sign may carry.
const (
	// MaxKubernetesClaims bounds the encoded claims: a service-account
	// token's claims (pod, node, service account, their uids, audiences)
	// are under 2 KiB; the gRPC message limit bounds the request anyway.
	MaxKubernetesClaims = 16 << 10
	// KubernetesClockSkew is how far in the future iat may be, and exp
	// beyond now + token_max_ttl: kube-apiserver stamps the claims from its
	// own clock, on the same machine.
	KubernetesClockSkew = time.Minute
	// KubernetesSubjectPrefix starts the sub of every service-account
	// token (system:serviceaccount:NAMESPACE:NAME).
	KubernetesSubjectPrefix = "system:serviceaccount:"
)

// CheckKubernetesClaims checks the base64url claims of an ExternalJWTSigner
// Sign before they are signed as they are: canonical unpadded base64url of
// valid UTF-8 JSON, one object without duplicate names (verifiers differ on
// which one wins), iss the cluster's issuer, sub a service account, aud
// present, integer iat and exp with 0 < exp - iat <= maxTTL, iat not in the
// future and exp not beyond now + maxTTL (both within KubernetesClockSkew),
// and nbf, if present, not after exp. A caller that can reach the socket
// can thereby mint no token that outlives token_max_ttl from now, nor one
// any verifier reads differently from what was checked and audited.
func CheckKubernetesClaims(encoded, issuer string, maxTTL time.Duration, now time.Time) (*KubernetesClaims, error) {
	const field = "claims"
	if encoded == "" {
		return nil, Invalid(field, "claims is empty: want the base64url JSON claims of the token")
	}
	if len(encoded) > MaxKubernetesClaims {
		return nil, invalid(ClaimsTooLarge, field, "claims are %d bytes encoded; at most %d", len(encoded), MaxKubernetesClaims)
	}
	payload, err := base64.RawURLEncoding.Strict().DecodeString(encoded)
	if err != nil {
		return nil, invalid(ClaimsInvalid, field, "claims are not canonical unpadded base64url: %v", err)
	}
	if !utf8.Valid(payload) {
		return nil, invalid(ClaimsInvalid, field, "claims are not valid UTF-8")
	}
	fields, err := topLevel(payload)
	if err != nil {
		return nil, invalid(ClaimsInvalid, field, "claims: %v", err)
	}
	var c KubernetesClaims
	c.Payload = payload
	var iss string
	if err := stringClaim(fields, "iss", &iss, true); err != nil {
		return nil, err
	}
	if iss != issuer {
		return nil, Invalid(field, "iss %q is not this signer's Kubernetes issuer %q", Truncate(iss, 256), issuer)
	}
	if err := stringClaim(fields, "sub", &c.Subject, true); err != nil {
		return nil, err
	}
	if ns, name, ok := strings.Cut(strings.TrimPrefix(c.Subject, KubernetesSubjectPrefix), ":"); !strings.HasPrefix(c.Subject, KubernetesSubjectPrefix) ||
		!ok || ns == "" || name == "" || strings.Contains(name, ":") {
		return nil, Invalid(field, "sub %q is not a service account (%sNAMESPACE:NAME)", Truncate(c.Subject, 256), KubernetesSubjectPrefix)
	}
	if c.Audience, err = audienceClaim(fields["aud"]); err != nil {
		return nil, err
	}
	if err := stringClaim(fields, "jti", &c.JTI, false); err != nil {
		return nil, err
	}
	iat, err := dateClaim(fields, "iat", true)
	if err != nil {
		return nil, err
	}
	exp, err := dateClaim(fields, "exp", true)
	if err != nil {
		return nil, err
	}
	c.IssuedAt, c.Expiry = time.Unix(iat, 0), time.Unix(exp, 0)
	switch lifetime := c.Expiry.Sub(c.IssuedAt); {
	case lifetime <= 0:
		return nil, Invalid(field, "exp %d is not after iat %d", exp, iat)
	case lifetime > maxTTL:
		return nil, invalid(TTLOutOfRange, field, "exp - iat is %v; the key ring's token_max_ttl is %v", lifetime, maxTTL)
	case c.IssuedAt.After(now.Add(KubernetesClockSkew)):
		return nil, Invalid(field, "iat %d is in the future (now %d)", iat, now.Unix())
	case !c.Expiry.After(now):
		return nil, Invalid(field, "exp %d has passed (now %d)", exp, now.Unix())
	case c.Expiry.After(now.Add(maxTTL + KubernetesClockSkew)):
		return nil, invalid(TTLOutOfRange, field, "exp %d is more than token_max_ttl %v from now (%d)", exp, maxTTL, now.Unix())
	}
	if _, ok := fields["nbf"]; ok {
		nbf, err := dateClaim(fields, "nbf", true)
		if err != nil {
			return nil, err
		}
		if nbf > exp {
			return nil, Invalid(field, "nbf %d is after exp %d", nbf, exp)
		}
	}
	return &c, nil
}

// topLevel splits a JSON object into its members, refusing duplicate
// names and anything after the object.
func topLevel(b []byte) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, errors.New("not a JSON object")
	}
	out := map[string]json.RawMessage{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("not valid JSON: %v", err)
		}
		name, _ := t.(string) // an object's keys are strings
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("not valid JSON: %v", err)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("claim %q appears twice", Truncate(name, 64))
		}
		out[name] = v
	}
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("not valid JSON: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the JSON object")
	}
	return out, nil
}

func stringClaim(fields map[string]json.RawMessage, name string, dst *string, required bool) error {
	raw, ok := fields[name]
	if !ok {
		if required {
			return Invalid("claims", "claims have no %s", name)
		}
		return nil
	}
	if err := json.Unmarshal(raw, dst); err != nil || *dst == "" {
		return Invalid("claims", "claim %s is not a non-empty string", name)
	}
	return nil
}

func audienceClaim(raw json.RawMessage) ([]string, error) {
	if raw == nil {
		return nil, Invalid("claims", "claims have no aud")
	}
	var one string
	if json.Unmarshal(raw, &one) == nil && one != "" {
		return []string{one}, nil
	}
	var many []string
	if err := json.Unmarshal(raw, &many); err != nil || len(many) == 0 {
		return nil, Invalid("claims", "claim aud is not a string or a non-empty array of strings")
	}
	for _, a := range many {
		if a == "" {
			return nil, Invalid("claims", "claim aud has an empty audience")
		}
	}
	return many, nil
}

// dateClaim reads a NumericDate as whole seconds (kube-apiserver writes
// integers); a fraction, an exponent or a value out of range is refused.
func dateClaim(fields map[string]json.RawMessage, name string, required bool) (int64, error) {
	raw, ok := fields[name]
	if !ok {
		if required {
			return 0, Invalid("claims", "claims have no %s", name)
		}
		return 0, nil
	}
	var n json.Number
	// A quoted number would decode into a json.Number too; verifiers
	// refuse it.
	if len(raw) == 0 || raw[0] == '"' || json.Unmarshal(raw, &n) != nil {
		return 0, Invalid("claims", "claim %s is not a number", name)
	}
	v, err := n.Int64()
	if err != nil || v < 0 || v > math.MaxInt64/int64(time.Second) {
		return 0, Invalid("claims", "claim %s %s is not whole seconds since 1970 in range", name, Truncate(n.String(), 32))
	}
	return v, nil
}
