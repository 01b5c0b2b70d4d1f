package jose

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
)

func TestPayload(t *testing.T) {
	now := time.Unix(1_700_000_000, 900_000_000)
	custom, err := EncodeClaims(claims(t, map[string]any{"scope": "read write", "z": 1.5, "a": []any{true, nil, "<&>"}, "obj": map[string]any{"k": "v"}}))
	if err != nil {
		t.Fatal(err)
	}
	body, jti, exp := Payload(Claims{Issuer: "https://signet.example", Subject: "svc-a", Audience: []string{"svc-b"}, TTL: 90 * time.Second}, custom, now)
	var got map[string]any
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatalf("payload is not JSON: %v\n%s", err, body)
	}
	want := map[string]any{"iss": "https://signet.example", "sub": "svc-a", "aud": "svc-b", "iat": 1700000000.0, "nbf": 1700000000.0,
		"exp": 1700000090.0, "jti": jti, "scope": "read write", "z": 1.5, "a": []any{true, nil, "<&>"}, "obj": map[string]any{"k": "v"}}
	gj, _ := json.Marshal(got)
	wj, _ := json.Marshal(want)
	if string(gj) != string(wj) {
		t.Errorf("payload\n got %s\nwant %s", gj, wj)
	}
	if exp.Unix() != 1700000090 {
		t.Errorf("exp %v", exp)
	}
	if raw, _ := base64.RawURLEncoding.DecodeString(jti); len(raw) != 16 {
		t.Errorf("jti %q is not 128 random bits", jti)
	}
	if _, jti2, _ := Payload(Claims{Issuer: "i", Audience: []string{"a"}, TTL: time.Minute}, nil, now); jti2 == jti {
		t.Error("two tokens share a jti")
	}
	// Several audiences are an array; no subject means no sub claim.
	body, _, _ = Payload(Claims{Issuer: "i", Audience: []string{"a", "b"}, TTL: time.Minute}, nil, now)
	if !strings.Contains(string(body), `"aud":["a","b"]`) || strings.Contains(string(body), `"sub"`) || strings.Contains(string(body), `"cnf"`) {
		t.Errorf("payload %s", body)
	}
	// A bound token: cnf is an object with exactly x5t#S256.
	body, _, _ = Payload(Claims{Issuer: "i", Audience: []string{"a"}, TTL: time.Minute, CertThumbprint: CertThumbprint([]byte("der"))}, custom, now)
	var bound struct {
		Cnf map[string]string `json:"cnf"`
	}
	if err := json.Unmarshal(body, &bound); err != nil || len(bound.Cnf) != 1 ||
		bound.Cnf["x5t#S256"] != "UFDYDSLs1HHqVd9wNAQsHgQTQf9AZuf2_zjiC3IN-Oo" {
		t.Errorf("bound payload %s (%v)", body, err)
	}
}

// cnf is Signet's to set: a caller that could write it could bind a token to
// another party's certificate.
func TestCnfIsReserved(t *testing.T) {
	if _, err := EncodeClaims(claims(t, map[string]any{"cnf": map[string]any{"x5t#S256": "x"}})); err == nil || !strings.Contains(err.Error(), "bind_to_certificate") {
		t.Errorf("claims.cnf: %v", err)
	}
	if _, _, err := EncodeClaimsJSON(`{"cnf":{"jkt":"x"}}`); err == nil {
		t.Error("claims_json.cnf: accepted")
	}
}

func TestEncodeClaimsIsDeterministic(t *testing.T) {
	c := claims(t, map[string]any{"b": map[string]any{"y": 1, "x": 2}, "a": "s", "c": []any{3, "4"}})
	first, err := EncodeClaims(c)
	if err != nil {
		t.Fatal(err)
	}
	if string(first) != `"a":"s","b":{"x":2,"y":1},"c":[3,"4"]` {
		t.Errorf("encoded %s", first)
	}
	for range 20 {
		if again, _ := EncodeClaims(c); string(again) != string(first) {
			t.Fatalf("encoding changed between calls: %s vs %s", again, first)
		}
	}
	if out, err := EncodeClaims(nil); out != nil || err != nil {
		t.Errorf("nil claims: %q, %v", out, err)
	}
	// At exactly the limit it is accepted; one byte more is refused.
	pad := MaxClaimsBytes - len(`"p":""`)
	if _, err := EncodeClaims(&structpb.Struct{Fields: map[string]*structpb.Value{"p": structpb.NewStringValue(strings.Repeat("x", pad))}}); err != nil {
		t.Errorf("claims of exactly %d bytes refused: %v", MaxClaimsBytes, err)
	}
	if _, err := EncodeClaims(&structpb.Struct{Fields: map[string]*structpb.Value{"p": structpb.NewStringValue(strings.Repeat("x", pad+1))}}); err == nil {
		t.Errorf("claims of %d bytes accepted", MaxClaimsBytes+1)
	}
	// At exactly the depth limit it is accepted.
	if _, err := EncodeClaims(&structpb.Struct{Fields: map[string]*structpb.Value{"d": nested(MaxClaimsDepth - 1)}}); err != nil {
		t.Errorf("claims nested %d deep refused: %v", MaxClaimsDepth, err)
	}
}

func TestHeader(t *testing.T) {
	raw, err := base64.RawURLEncoding.DecodeString(Header("ES256", "abc", DefaultTyp))
	if err != nil || string(raw) != `{"alg":"ES256","kid":"abc","typ":"JWT"}` {
		t.Errorf("header %s, %v", raw, err)
	}
}

func claims(t *testing.T, m map[string]any) *structpb.Struct {
	t.Helper()
	s, err := structpb.NewStruct(m)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// nested is a claim value depth objects deep.
func nested(depth int) *structpb.Value {
	v := structpb.NewStringValue("leaf")
	for range depth {
		v = structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{"n": v}})
	}
	return v
}
