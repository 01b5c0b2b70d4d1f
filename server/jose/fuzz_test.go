package jose

import (
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
