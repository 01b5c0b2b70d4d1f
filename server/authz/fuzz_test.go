package authz

import (
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

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
			_ = globMatch(pattern, s) // must not panic or hang
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
