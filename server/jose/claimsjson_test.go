package jose

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestEncodeClaimsJSONKeepsNumbersExactly(t *testing.T) {
	in := `{"uid": 9007199254740993, "pi": 3.14159265358979323846264338327950288, "neg": -0.000000000000000000001,
	  "big": 123456789012345678901234567890, "e": 1.5E+300,
	  "nested": {"z": [1, {"deep": 18446744073709551617}], "a": null},
	  "ключ": "значение", "😀": "<&>\u2028", "t": true}`
	members, names, err := EncodeClaimsJSON(in)
	if err != nil {
		t.Fatal(err)
	}
	want := `"big":123456789012345678901234567890,"e":1.5E+300,"neg":-0.000000000000000000001,` +
		`"nested":{"a":null,"z":[1,{"deep":18446744073709551617}]},"pi":3.14159265358979323846264338327950288,` +
		`"t":true,"uid":9007199254740993,"ключ":"значение","😀":"\u003c\u0026\u003e\u2028"`
	if string(members) != want {
		t.Errorf("encoded\n got %s\nwant %s", members, want)
	}
	if strings.Join(names, ",") != "big,e,neg,nested,pi,t,uid,ключ,😀" {
		t.Errorf("names %q", names)
	}
	// What it renders is JSON meaning the same numbers, digit for digit.
	dec := json.NewDecoder(bytes.NewReader(append(append([]byte("{"), members...), '}')))
	dec.UseNumber()
	var got map[string]any
	if err := dec.Decode(&got); err != nil {
		t.Fatal(err)
	}
	if got["uid"].(json.Number) != "9007199254740993" {
		t.Errorf("uid %v", got["uid"])
	}
}

func TestEncodeClaimsJSONRefusals(t *testing.T) {
	deep := strings.Repeat("[", MaxClaimsDepth+1) + strings.Repeat("]", MaxClaimsDepth+1)
	for _, c := range []struct {
		in, field string
		problem   Problem
		msg       string
	}{
		{`{"iss": "x"}`, "claims_json.iss", ReservedClaim, "claims_json.iss is reserved: Signet sets the issuer"},
		{`{"a": 1, "a": 2}`, "claims_json.a", ClaimsInvalid, "claims_json.a appears twice"},
		{`{"o": {"k": 1, "k": 1}}`, "claims_json.o.k", ClaimsInvalid, "claims_json.o.k appears twice"},
		{`[1]`, "claims_json", ClaimsInvalid, "must be a JSON object"},
		{`{"a": 1} {}`, "claims_json", ClaimsInvalid, "more after its object"},
		{`{"a": }`, "claims_json.a", ClaimsInvalid, "not valid JSON"},
		{`{"a": 1`, "claims_json", ClaimsInvalid, "ends early"},
		{`{"a": 1e400}`, "claims_json.a", ClaimsInvalid, "beyond the range"},
		{`{"a": 1E-400}`, "claims_json.a", ClaimsInvalid, "beyond the range"},
		{`{"a": [-0.5e-400]}`, "claims_json.a[0]", ClaimsInvalid, "beyond the range"},
		{`{"a": "\ud800"}`, "claims_json.a", ClaimsInvalid, "surrogate"},
		{`{"a": "x\uDC00"}`, "claims_json.a", ClaimsInvalid, "surrogate"},
		{`{"a": "\ud800\u0041"}`, "claims_json.a", ClaimsInvalid, "surrogate"},
		{`{"a": "\ude00\ud83d"}`, "claims_json.a", ClaimsInvalid, "surrogate"},
		{`{"o": {"\ud800": 1}}`, "claims_json.o", ClaimsInvalid, "surrogate"},
		{"{\"a\": \"\xff\"}", "claims_json", ClaimsInvalid, "not valid UTF-8"},
		{`{"a": ` + deep + `}`, "claims_json.a" + strings.Repeat("[0]", MaxClaimsDepth), ClaimsTooLarge, "nest deeper than 16"},
		{`{"a": "` + strings.Repeat("x", MaxClaimsBytes) + `"}`, "claims_json", ClaimsTooLarge, "claims exceed 8192 bytes"},
		{`{"a": "` + strings.Repeat(" ", 4*MaxClaimsBytes) + `"}`, "claims_json", ClaimsTooLarge, "claims may not exceed 8192 bytes"},
	} {
		_, _, err := EncodeClaimsJSON(c.in)
		var ie *InvalidError
		if !errors.As(err, &ie) {
			t.Errorf("%.40q: error %v, want an *InvalidError", c.in, err)
			continue
		}
		if ie.Field != c.field || ie.Problem != c.problem || !strings.Contains(ie.Msg, c.msg) {
			t.Errorf("%.40q: field %q problem %d %q; want field %q problem %d, message with %q", c.in, ie.Field, ie.Problem, ie.Msg, c.field, c.problem, c.msg)
		}
	}
	// Nesting up to the limit is fine, as in EncodeClaims.
	ok := strings.Repeat("[", MaxClaimsDepth) + strings.Repeat("]", MaxClaimsDepth)
	if _, _, err := EncodeClaimsJSON(`{"a": ` + ok + `}`); err != nil {
		t.Errorf("depth %d refused: %v", MaxClaimsDepth, err)
	}
	// A surrogate pair is one character; an escaped backslash before a
	// "u" is no escape; zero in any form, and numbers a double holds only
	// as a subnormal, are numbers verifiers read as written.
	for in, want := range map[string]string{
		`{"a": "\ud83d\ude00"}`:      `"a":"` + "😀" + `"`,
		`{"a": "\\ud800"}`:           `"a":"\\ud800"`,
		`{"a": [0e-400, 0.000, -0]}`: `"a":[0e-400,0.000,-0]`,
		`{"a": 4.9e-324}`:            `"a":4.9e-324`,
	} {
		if m, _, err := EncodeClaimsJSON(in); err != nil || string(m) != want {
			t.Errorf("%s: %s, %v; want %s", in, m, err, want)
		}
	}
	if m, n, err := EncodeClaimsJSON(` { } `); m != nil || n != nil || err != nil {
		t.Errorf("empty object: %q %q %v", m, n, err)
	}
}

// FuzzEncodeClaimsJSON: whatever claims_json the encoder accepts renders
// as JSON members within the limits, with no reserved or repeated name.
func FuzzEncodeClaimsJSON(f *testing.F) {
	for _, s := range []string{`{"a": 1}`, `{"n": 9007199254740993, "o": {"x": [1.0, "s", null]}}`, `{"a":1,"a":1}`, `{"iat":1}`,
		`{"a": "\ud800"}`, `{"a": "\ud83d\ude00"}`, `{"a": "\\ud800"}`, `{"a": 1E-400}`, `{"a": 4.9e-324}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		members, names, err := EncodeClaimsJSON(in)
		if err != nil {
			var ie *InvalidError
			if !errors.As(err, &ie) {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		if len(members) > MaxClaimsBytes {
			t.Fatalf("accepted %d bytes", len(members))
		}
		var m map[string]json.RawMessage
		if len(members) > 0 {
			if err := json.Unmarshal(append(append([]byte("{"), members...), '}'), &m); err != nil {
				t.Fatalf("rendered invalid JSON %s: %v", members, err)
			}
		}
		if len(m) != len(names) {
			t.Fatalf("%d names for %d members", len(names), len(m))
		}
		for _, n := range names {
			if _, ok := reservedClaims[n]; ok {
				t.Fatalf("accepted reserved %q", n)
			}
		}
		// What is accepted means what was written: no string gained a
		// U+FFFD the input did not have (a lone surrogate decodes to it)
		// and no non-zero number became 0.
		if strings.ContainsRune(string(members), utf8.RuneError) && !strings.ContainsRune(in, utf8.RuneError) &&
			!strings.Contains(strings.ToLower(in), `\ufffd`) {
			t.Fatalf("accepted %q as %s: a U+FFFD appeared", in, members)
		}
		dec := json.NewDecoder(bytes.NewReader(append(append([]byte("{"), members...), '}')))
		dec.UseNumber()
		for {
			tok, err := dec.Token()
			if err != nil {
				break
			}
			if n, ok := tok.(json.Number); ok {
				if f, _ := n.Float64(); f == 0 && nonZeroMantissa(string(n)) {
					t.Fatalf("accepted %s, which verifiers read as 0", n)
				}
			}
		}
	})
}
