package config

import (
	"strings"
	"testing"
	"time"
)

func TestX5CConfig(t *testing.T) {
	c, err := Parse([]byte(`
issuer: https://signet.example
key_rings:
  - {name: corp-ca, backend: 'local://d', algorithm: ES384, usage: ca, x5c: {subject: {common_name: Corp JWT CA, organization: [Corp]}}}
  - name: default
    backend: local://d
    rotation_period: 720h
    x5c: {ca_ring: corp-ca, dns_names: [signet.example]}
  - {name: self, backend: 'local://d', x5c: {self_signed: true, required: false, validity: 48h, renew_before: 12h}}
  - {name: pki, backend: 'local://d', x5c: {vault_pki: {address: 'https://vault:8200', role: jwt}}}
`))
	if err != nil {
		t.Fatal(err)
	}
	ca := c.KeyRings[0].CertDefaults(c.Issuer)
	if !c.KeyRings[0].IsCA() || ca.Subject.CommonName != "Corp JWT CA" || ca.Validity.D() != 5*365*24*time.Hour || ca.URIs != nil {
		t.Errorf("CA ring defaults: %+v", ca)
	}
	d := c.KeyRings[1]
	x := d.CertDefaults(c.Issuer)
	if life := d.PublishAhead + d.RotationPeriod + d.RetireAfter; x.Validity != 2*life || x.RenewBefore != x.Validity/3 {
		t.Errorf("validity %v renew_before %v, want twice a version's published life %v and a third of it", x.Validity.D(), x.RenewBefore.D(), life.D())
	}
	if x.Subject.CommonName != "default" || len(x.URIs) != 1 || x.URIs[0] != c.Issuer || !*x.Required {
		t.Errorf("signing ring defaults: %+v", x)
	}
	if s := c.KeyRings[2].CertDefaults(c.Issuer); *s.Required || s.Validity.D() != 48*time.Hour {
		t.Errorf("self ring: %+v", s)
	}
	if p := c.KeyRings[3].CertDefaults(c.Issuer).VaultPKI; p.Mount != "pki" || p.TokenEnv != "VAULT_TOKEN" {
		t.Errorf("vault_pki defaults: %+v", p)
	}
	if c.KeyRings[1].CertDefaults(c.Issuer) == nil || (RingConfig{Name: "x"}).CertDefaults(c.Issuer) != nil {
		t.Error("CertDefaults: a ring without x5c has none")
	}
}

func TestX5CConfigRefused(t *testing.T) {
	for _, tc := range []struct{ name, rings, want string }{
		{"two sources", `[{name: a, backend: 'local://d', x5c: {self_signed: true, ca_ring: b}}]`, "exactly one of"},
		{"no source", `[{name: a, backend: 'local://d', x5c: {validity: 48h}}]`, "exactly one of"},
		{"ca_ring not a CA", `[{name: b, backend: 'local://d'}, {name: a, backend: 'local://d', x5c: {ca_ring: b}}]`, "usage: ca"},
		{"ca_ring unknown", `[{name: a, backend: 'local://d', x5c: {ca_ring: nope}}]`, "usage: ca"},
		{"CA with a source", `[{name: a, backend: 'local://d', usage: ca, x5c: {self_signed: true}}]`, "self-signed CA"},
		{"unknown usage", `[{name: a, backend: 'local://d', usage: encrypt}]`, "want sign or ca"},
		{"misspelt field", `[{name: a, backend: 'local://d', x5c: {self_sigend: true}}]`, "self_sigend"},
		{"misspelt vault_pki field", `[{name: a, backend: 'local://d', x5c: {vault_pki: {adress: x}}}]`, "adress"},
		{"vault_pki without role", `[{name: a, backend: 'local://d', x5c: {vault_pki: {address: 'https://v:8200'}}}]`, "role"},
		{"vault_pki over http", `[{name: a, backend: 'local://d', x5c: {vault_pki: {address: 'http://v:8200', role: r}}}]`, "in clear"},
		{"renew_before over validity", `[{name: a, backend: 'local://d', x5c: {self_signed: true, validity: 24h, renew_before: 24h}}]`, "renew_before"},
		{"renew_before under a cached JWKS", `[{name: a, backend: 'local://d', x5c: {self_signed: true, validity: 24h, renew_before: 1m}}]`, "jwks_max_age"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte("key_rings: " + tc.rings))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error saying %q", err, tc.want)
			}
		})
	}
}
