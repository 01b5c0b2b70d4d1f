package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signet-dev/signet/backends"
	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
)

// TestTokensFollowRFC8725 checks the JWT pitfalls RFC 8725 (JWT Best
// Current Practices) warns about on tokens of every algorithm, as the real
// binary issues them: the header is exactly alg (the ring's, never another),
// kid and an explicit typ, with no crit; typ cannot inject header members;
// the dates are integers; aud is a string for one audience and an array for
// several, and PyJWT, node jose and go-jose all accept both.
func TestTokensFollowRFC8725(t *testing.T) {
	t.Parallel()
	p := startSignet(t, t.TempDir())
	var tokens []string
	type issued struct {
		ring, alg, typ string
		aud            []string
	}
	var what []issued
	for _, alg := range backends.AllAlgorithms {
		ring := strings.ToLower(string(alg))
		for _, c := range []issued{{typ: "", aud: []string{"e2e"}}, {typ: "at+jwt", aud: []string{"e2e", "other"}}} {
			resp, err := p.client.Sign(ctxT(t), &signetv1.SignRequest{KeyRing: ring, Subject: "svc", Audience: c.aud, Typ: c.typ})
			if err != nil {
				t.Fatalf("%s: %v", ring, err)
			}
			c.ring, c.alg = ring, string(alg)
			if c.typ == "" {
				c.typ = "JWT"
			}
			what = append(what, c)
			tokens = append(tokens, resp.GetToken())
		}
	}
	for i, tok := range tokens {
		w := what[i]
		parts := strings.Split(tok, ".")
		header := decodeMembers(t, parts[0])
		if keys := sortedKeys(header); !slices.Equal(keys, []string{"alg", "kid", "typ"}) {
			t.Errorf("%s: header members %v, want exactly alg, kid, typ", w.ring, keys)
		}
		if header["alg"] != w.alg || header["typ"] != w.typ {
			t.Errorf("%s: header %v, want alg %s and typ %s", w.ring, header, w.alg, w.typ)
		}
		claims := decodeMembers(t, parts[1])
		for _, date := range []string{"iat", "nbf", "exp"} {
			n, ok := claims[date].(json.Number)
			if !ok || strings.ContainsAny(n.String(), ".eE") {
				t.Errorf("%s: %s is %v, want an integer NumericDate", w.ring, date, claims[date])
			}
		}
		switch aud := claims["aud"].(type) {
		case string:
			if len(w.aud) != 1 || aud != w.aud[0] {
				t.Errorf("%s: aud %q for audiences %v", w.ring, aud, w.aud)
			}
		case []any:
			if len(w.aud) < 2 || len(aud) != len(w.aud) {
				t.Errorf("%s: aud %v for audiences %v", w.ring, aud, w.aud)
			}
		default:
			t.Errorf("%s: aud %v", w.ring, claims["aud"])
		}
		if err := goJOSEVerify(p.jwks(t), tok); err != nil {
			t.Errorf("%s (aud %v): go-jose: %v", w.ring, w.aud, err)
		}
	}
	for verifier, results := range externalVerify(t, p, tokens...) {
		for i, r := range results {
			if !r.OK || r.Alg != what[i].alg {
				t.Errorf("%s (aud %v): %s: %+v", what[i].ring, what[i].aud, verifier, r)
			}
		}
	}

	// typ is a media type and nothing else: no way to add or replace a
	// header member through it.
	for _, typ := range []string{`JWT","alg":"none`, `JWT"`, "JWT\\u0022", "JWT\n", "a/b/c", strings.Repeat("x", 65)} {
		_, err := p.client.Sign(ctxT(t), &signetv1.SignRequest{KeyRing: "default", Audience: []string{"e2e"}, Typ: typ})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("typ %q: %v, want InvalidArgument", typ, err)
		}
	}
}

// decodeMembers decodes a base64url JSON object keeping numbers as written.
func decodeMembers(t *testing.T, part string) map[string]any {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(part)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	return m
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
