package jose

import (
	"encoding/base64"
	"encoding/json"
	"reflect"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// FuzzEncodeClaims feeds arbitrary protobuf to the claims encoder, which
// turns caller input into token JSON. Whatever it accepts must be valid JSON
// meaning exactly the Struct, within the limits, with no reserved claim.
func FuzzEncodeClaims(f *testing.F) {
	for _, m := range []map[string]any{
		{"scope": "read", "n": 1.5, "list": []any{true, nil, "x"}, "obj": map[string]any{"a": "\u2028<>&"}},
		{"iat": 1},
		{"": ""},
	} {
		s, _ := structpb.NewStruct(m)
		b, _ := proto.Marshal(s)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var s structpb.Struct
		if proto.Unmarshal(data, &s) != nil {
			return
		}
		out, err := EncodeClaims(&s)
		if err != nil {
			if _, ok := err.(*InvalidError); !ok {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		if len(out) > MaxClaimsBytes {
			t.Fatalf("accepted %d bytes", len(out))
		}
		var got map[string]any
		if err := json.Unmarshal(append(append([]byte("{"), out...), '}'), &got); err != nil {
			t.Fatalf("encoded claims are not JSON: %v\n%s", err, out)
		}
		for k := range got {
			if _, reserved := reservedClaims[k]; reserved {
				t.Fatalf("reserved claim %q accepted", k)
			}
		}
		if want := s.AsMap(); len(want) > 0 && !reflect.DeepEqual(got, want) {
			t.Fatalf("encoded claims mean something else:\n got %v\nwant %v", got, want)
		}
	})
}

// FuzzTyp feeds arbitrary typ values to CheckTyp: whatever it accepts must
// make a header of exactly alg, kid and that typ, so no header member can be
// injected or replaced through it.
func FuzzTyp(f *testing.F) {
	for _, s := range []string{"", "JWT", "at+jwt", "application/jwt", `JWT","alg":"none`, "JWT\x00", "a/b/c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, typ string) {
		got, err := CheckTyp(typ)
		if err != nil {
			if _, ok := err.(*InvalidError); !ok {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		raw, err := base64.RawURLEncoding.DecodeString(Header("ES256", "kid-1", got))
		if err != nil {
			t.Fatal(err)
		}
		var h map[string]any
		if err := json.Unmarshal(raw, &h); err != nil {
			t.Fatalf("header %s is not JSON: %v", raw, err)
		}
		if len(h) != 3 || h["alg"] != "ES256" || h["kid"] != "kid-1" || h["typ"] != got || (typ != "" && got != typ) {
			t.Fatalf("typ %q made header %s", typ, raw)
		}
	})
}
