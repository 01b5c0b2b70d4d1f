package jose

import (
	"encoding/base64"
	"encoding/json"
	"math"
	"math/rand/v2"
	"testing"
)

// The token bytes must not change with the encoder: appendQuoted writes
// what encoding/json writes.
func TestAppendQuotedIsMarshal(t *testing.T) {
	cases := []string{"", "svc-a", `quote " backslash \ slash /`, "<script>&amp;</script>", "\x00\x01\x1f\x7f",
		"\b\f\n\r\t", "tab\there", "é ü 日本 🎉", "\u2028\u2029", "bad \xff utf8 \xc3", "\xed\xa0\x80 surrogate",
		"spiffe://signet.dev/service/demo", string([]byte{0xe2, 0x80}), "end \\"}
	for b := 0; b < 256; b++ {
		cases = append(cases, string([]byte{byte(b)}), "a"+string([]byte{byte(b)})+"z")
	}
	for _, s := range cases {
		want, _ := json.Marshal(s)
		if got := appendQuoted(nil, s); string(got) != string(want) {
			t.Errorf("appendQuoted(%q) = %s, want %s", s, got, want)
		}
	}
	for _, ss := range [][]string{{"a"}, {"a", "b<c"}, {"", "\u2028"}} {
		want, _ := json.Marshal(ss)
		if got := appendQuotedList(nil, ss); string(got) != string(want) {
			t.Errorf("appendQuotedList(%q) = %s, want %s", ss, got, want)
		}
	}
}

func FuzzAppendQuoted(f *testing.F) {
	f.Add("svc-a")
	f.Add("<\u2028\xff>")
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := json.Marshal(s)
		if got := appendQuoted(nil, s); string(got) != string(want) {
			t.Errorf("appendQuoted(%q) = %s, want %s", s, got, want)
		}
	})
}

// Header writes the bytes json.Marshal wrote for the header struct.
func TestHeaderIsMarshal(t *testing.T) {
	for _, h := range [][3]string{{"ES256", "kid-1", "JWT"}, {"EdDSA", "Zx_9-", "at+jwt"}, {"PS512", "", "application/example+jwt"}} {
		want, _ := json.Marshal(struct {
			Alg string `json:"alg"`
			Kid string `json:"kid"`
			Typ string `json:"typ"`
		}{h[0], h[1], h[2]})
		if got := Header(h[0], h[1], h[2]); got != base64.RawURLEncoding.EncodeToString(want) {
			t.Errorf("Header%q = %s, want base64url of %s", h, got, want)
		}
	}
}

func TestAppendNumberIsMarshal(t *testing.T) {
	nums := []float64{0, math.Copysign(0, -1), 1, -1, 1.5, 42, 1e20, 1e21, 123456789e13, 1e-6, 9.99e-7, 1e-7, -1e-9, 5e-324,
		math.MaxFloat64, math.SmallestNonzeroFloat64, 0.1, 1 / 3.0, 1 << 53, 1<<53 + 1, -123.456e-30, 2.5e100}
	for i := 0; i < 2000; i++ {
		nums = append(nums, math.Float64frombits(rand.Uint64()))
	}
	for _, f := range nums {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			continue
		}
		want, _ := json.Marshal(f)
		if got := appendNumber(nil, f); string(got) != string(want) {
			t.Errorf("appendNumber(%v) = %s, want %s", f, got, want)
		}
	}
}
