package server

import (
	"encoding/json"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

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
		out, err := encodeClaims(&s)
		if err != nil {
			if _, ok := err.(*inputError); !ok {
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

// FuzzGlobMatch checks the policy matcher against a regular expression
// built from the same pattern: '*' is ".*", '?' is ".", the rest literal.
func FuzzGlobMatch(f *testing.F) {
	f.Add("spiffe://corp/ns/*/sa/api", "spiffe://corp/ns/payments/sa/api")
	f.Add("a*b*c?", "aXXbYYcZ")
	f.Add("**?*", "")
	f.Add("$caller", "$caller")
	f.Fuzz(func(t *testing.T, pattern, s string) {
		if len(pattern) > 64 || len(s) > 256 {
			return
		}
		var re strings.Builder
		re.WriteString(`(?s)^`)
		for _, r := range pattern {
			switch r {
			case '*':
				re.WriteString(".*")
			case '?':
				re.WriteString(".")
			default:
				re.WriteString(regexp.QuoteMeta(string(r)))
			}
		}
		re.WriteString("$")
		if !utf8.ValidString(pattern) || !utf8.ValidString(s) || strings.ContainsRune(pattern, '?') && !isASCII(s) {
			// '?' matches one byte; the regexp one rune. Compare where they agree.
			globMatch(pattern, s) // must not panic or hang
			return
		}
		want := regexp.MustCompile(re.String()).MatchString(s)
		if got := globMatch(pattern, s); got != want {
			t.Fatalf("globMatch(%q, %q) = %v, want %v", pattern, s, got, want)
		}
	})
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
