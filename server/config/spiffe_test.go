package config

import (
	"strings"
	"testing"
)

// A JWT-SVID ring needs a trust domain and an algorithm the JWT-SVID
// specification allows; a trust domain needs a ring to fill its bundle.
func TestSPIFFEConfig(t *testing.T) {
	const ring = "key_rings: [{name: svid, backend: 'local://x', profile: jwt-svid%s}]\n"
	c, err := Parse([]byte("spiffe: {trust_domain: corp.example}\n" + strings.Replace(ring, "%s", "", 1)))
	if err != nil || !c.KeyRings[0].IsJWTSVID() || c.SPIFFE.TrustDomain != "corp.example" {
		t.Fatalf("a JWT-SVID ring: %v %+v", err, c)
	}
	for _, bad := range []struct{ yaml, want string }{
		{strings.Replace(ring, "%s", "", 1), "needs spiffe.trust_domain"},
		{"spiffe: {trust_domain: corp.example}\n" + strings.Replace(ring, "%s", ", algorithm: EdDSA", 1), "JWT-SVIDs are signed with one of"},
		{"spiffe: {trust_domain: corp.example}\n" + strings.Replace(ring, "%s", ", x5c: {self_signed: true}", 1), "not both"},
		{"spiffe: {trust_domain: corp.example}\n" + strings.Replace(ring, "jwt-svid%s", "svid", 1), `profile "svid"`},
		{"spiffe: {trust_domain: 'spiffe://corp.example'}\n" + strings.Replace(ring, "%s", "", 1), "spiffe.trust_domain"},
		{"spiffe: {trust_domain: Corp.Example}\n" + strings.Replace(ring, "%s", "", 1), "spiffe.trust_domain"},
		{"spiffe: {trust_domain: corp.example}\nkey_rings: [{name: a, backend: 'local://x'}]\n", "no key ring has profile: jwt-svid"},
	} {
		if _, err := Parse([]byte(bad.yaml)); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: %v, want an error saying %q", bad.yaml, err, bad.want)
		}
	}
}
