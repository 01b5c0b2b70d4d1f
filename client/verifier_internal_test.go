package signetclient

import "testing"

// TestTypEqual: typ values compare as media types (RFC 7515 section 4.1.9):
// case-insensitively, "application/" implied only where there is no "/".
func TestTypEqual(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"JWT", "JWT", true},
		{"jwt", "JWT", true},
		{"application/jwt", "JWT", true},
		{"Application/AT+JWT", "at+jwt", true},
		{"at+jwt", "JWT", false},
		{"", "JWT", false},
		// "x/y" is the media type x/y, not application/x/y.
		{"application/x/y", "x/y", false},
		{"x/y", "X/Y", true},
		{"application/application/jwt", "application/jwt", false},
	} {
		if got := typEqual(c.a, c.b); got != c.want {
			t.Errorf("typEqual(%q, %q) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}
