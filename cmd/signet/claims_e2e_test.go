package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

// exactClaims has what a Struct's doubles cannot carry: integers above
// 2^53 (and beyond 64 bits), a long decimal, deep nesting, unicode keys.
const exactClaims = `{"uid": 9007199254740993, "balance": 12345678901234567890.123456789,
  "deep": {"a": {"b": {"c": {"d": {"e": [1, [2, [3, {"f": 18446744073709551615}]]]}}}}},
  "ключ": "значение", "名前": "値", "emoji😀": -9223372036854775809}`

func decodeExact(t *testing.T, b []byte) map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("%v: %s", err, b)
	}
	return m
}

// TestExactClaimsEndToEnd signs exactClaims with `signet sign --claims`
// (claims_json) and checks that go-jose, PyJWT and `signet verify` read back
// the same values: every digit of every integer (PyJWT keeps Python ints
// exact), and the long decimal as the double it denotes in PyJWT, which
// reads JSON decimals as floats.
func TestExactClaimsEndToEnd(t *testing.T) {
	t.Parallel()
	p := startSignetWith(t, configHead+fmt.Sprintf("key_rings:\n  - {name: default, backend: 'local://%s', algorithm: ES256}\n", t.TempDir()))
	token := strings.TrimSpace(runCLI(t, "sign", "--server", p.grpcAddr, "--audience", "e2e", "--subject", "svc", "--claims", exactClaims))
	want := decodeExact(t, []byte(exactClaims))

	// go-jose: the signature verifies and the payload holds the claims as written.
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(p.jwks(t), &set); err != nil {
		t.Fatal(err)
	}
	jws, err := jose.ParseSignedCompact(token, verifyAlgorithms)
	if err != nil {
		t.Fatal(err)
	}
	keys := set.Key(jws.Signatures[0].Header.KeyID)
	if len(keys) == 0 {
		t.Fatal("kid not in the JWKS")
	}
	payload, err := jws.Verify(keys[0].Key)
	if err != nil {
		t.Fatalf("go-jose: %v", err)
	}
	if !strings.Contains(string(payload), `"balance":12345678901234567890.123456789`) || !strings.Contains(string(payload), `"uid":9007199254740993`) {
		t.Errorf("the payload does not hold the numbers as written: %s", payload)
	}
	got := decodeExact(t, payload)
	for k, v := range want {
		if !reflect.DeepEqual(got[k], v) {
			t.Errorf("go-jose: claim %q is %v, want %v", k, got[k], v)
		}
	}

	// PyJWT, through the live JWKS.
	py := exec.Command("/usr/bin/python3", filepath.Join(repoRoot(t), "scripts", "verify_pyjwt.py"), p.httpURL+"/.well-known/jwks.json", testIssuer, "e2e")
	py.Stdin = strings.NewReader(token + "\n")
	var stderr bytes.Buffer
	py.Stderr = &stderr
	out, err := py.Output()
	if err != nil {
		t.Fatalf("PyJWT verifier failed (make test-deps installs it): %v\n%s", err, stderr.String())
	}
	res := decodeExact(t, out)
	if res["ok"] != true {
		t.Fatalf("PyJWT refused the token: %s", out)
	}
	pyClaims := res["claims"].(map[string]any)
	for k, v := range want {
		if k == "balance" {
			gotF, _ := strconv.ParseFloat(string(pyClaims[k].(json.Number)), 64)
			wantF, _ := strconv.ParseFloat(string(v.(json.Number)), 64)
			if gotF != wantF {
				t.Errorf("PyJWT: balance %v, want %v", gotF, wantF)
			}
			continue
		}
		if !reflect.DeepEqual(pyClaims[k], v) {
			t.Errorf("PyJWT: claim %q is %v, want %v", k, pyClaims[k], v)
		}
	}

	// signet verify (the client package's Verifier) prints every digit.
	verified := runCLI(t, "verify", "--jwks", p.httpURL+"/.well-known/jwks.json", "--issuer", testIssuer, "--audience", "e2e", token)
	for _, digits := range []string{"9007199254740993", "12345678901234567890.123456789", "18446744073709551615", "-9223372036854775809", `"ключ": "значение"`} {
		if !strings.Contains(verified, digits) {
			t.Errorf("signet verify does not show %s:\n%s", digits, verified)
		}
	}
}
