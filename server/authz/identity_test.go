package authz

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// The matching rules docs/configuration.md states, one row each: what a
// pattern matches, and the near misses it does not.
func TestIdentityPatternMatching(t *testing.T) {
	for _, c := range []struct {
		pattern string
		yes, no []string
	}{
		{"spiffe://corp.example/team/security",
			[]string{"spiffe://corp.example/team/security"},
			[]string{"dns:spiffe://corp.example/team/security", "spiffe://corp.example/team/security/x",
				"spiffe://corp.example/team/Security", "spiffe://corp.example.evil/team/security",
				"spiffe://evil/corp.example/team/security", "spiffe://corp.example/team", "corp.example/team/security"}},
		{"spiffe://corp.example/ns/payments/*",
			[]string{"spiffe://corp.example/ns/payments/api"},
			[]string{"spiffe://corp.example/ns/payments/sa/api", "spiffe://corp.example/ns/payments"}},
		{"spiffe://corp.example/ns/payments/**",
			[]string{"spiffe://corp.example/ns/payments/api", "spiffe://corp.example/ns/payments/sa/api"},
			[]string{"spiffe://corp.example/ns/payments", "spiffe://corp.example/ns/payroll/sa/api", "dns:corp.example"}},
		{"spiffe://corp.example/ns/*/sa/api-?",
			[]string{"spiffe://corp.example/ns/a/sa/api-1"},
			[]string{"spiffe://corp.example/ns/a/b/sa/api-1", "spiffe://corp.example/ns/a/sa/api-12"}},
		{"spiffe://corp.example/**/admin",
			[]string{"spiffe://corp.example/x/admin", "spiffe://corp.example/x/y/admin"},
			[]string{"spiffe://corp.example/admin", "spiffe://corp.example/x/admin/y"}},
		{"dns:api.corp.example",
			[]string{"dns:api.corp.example"},
			[]string{"spiffe://api.corp.example/x", "api.corp.example", "dns:api.corp.example.evil", "dns:x.api.corp.example"}},
		{"dns:*.corp.example",
			[]string{"dns:api.corp.example"},
			[]string{"dns:a.b.corp.example", "dns:corp.example", "dns:.corp.example", "dns:a/b.corp.example"}},
		{"dns:**",
			[]string{"dns:a", "dns:a.b.c"},
			[]string{"dns:spiffe://signet.dev/team/security", "dns:a..b", "spiffe://a/b"}},
		{"DNS:API.Corp.Example", nil, nil}, // not dns: (the namespace is written in lower case): refused below
	} {
		p, err := parseIDPattern(c.pattern)
		if c.yes == nil {
			if err == nil {
				t.Errorf("%q parsed", c.pattern)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", c.pattern, err)
		}
		for _, id := range c.yes {
			if !p.match(id) {
				t.Errorf("%q does not match %q", c.pattern, id)
			}
		}
		for _, id := range c.no {
			if p.match(id) {
				t.Errorf("%q matches %q", c.pattern, id)
			}
		}
	}
	// DNS names are not case-sensitive: the pattern is lower-cased, as
	// the identity is.
	if p, err := parseIDPattern("dns:API.corp.example"); err != nil || !p.match("dns:api.corp.example") {
		t.Errorf("dns: pattern in upper case: %v", err)
	}
}

// Patterns that can never match a caller are refused, saying why, and
// the ones the old rules read with '*' across '/' are warned about.
func TestIdentityPatternErrors(t *testing.T) {
	for pattern, want := range map[string]string{
		"host.example":                          `a certificate's DNS SAN is the identity "dns:host.example"`,
		"*":                                     `"spiffe://TRUST-DOMAIN/**"`,
		"spiffe://corp.example/a?x=1":           `holds '='`,
		"spiffe://corp.example/a#frag":          `holds '#'`,
		"spiffe://corp.example/a/../b":          `a ".." segment`,
		"spiffe://corp.example/a/./b":           `a "." segment`,
		"spiffe://corp.example/a/":              "an empty segment",
		"spiffe://corp.example//a":              "an empty segment",
		"spiffe://corp.example/a%2fb":           `holds '%'`,
		"spiffe://Corp.example/a":               "trust domain characters are limited",
		"spiffe://corp.example:443/a":           "trust domain characters are limited",
		"spiffe://user@corp.example/a":          "trust domain characters are limited",
		"spiffe://*.corp.example/a":             "matched exactly",
		"spiffe://corp.example":                 "names the trust domain only",
		"spiffe:///a":                           "trust domain",
		"SPIFFE://corp.example/a":               "in lower case",
		"spiffe://corp.example/**/x/**":         "more than one **",
		"dns:a..b":                              "an empty label",
		"dns:a.b/c":                             `holds '/'`,
		"dns:spiffe://signet.dev/team/sec":      `holds ':'`,
		"https://corp.example/team/security":    "neither a SPIFFE ID pattern",
		"urn:spiffe:corp.example:team:security": "neither",
	} {
		_, err := parseIDPattern(pattern)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", pattern, err, want)
		}
	}
	warned, err := PolicyWarnings([]byte(`grants:
  - {identity: "spiffe://corp.example/ns/payments/*", list: ["*"]}
  - {identity: "spiffe://corp.example/ns/payments/**", list: ["*"]}
  - {identity: "spiffe://corp.example/team/security", list: ["*"]}
  - {identity: "dns:*.corp.example", list: ["*"]}
`), nil)
	if err != nil || len(warned) != 1 || !strings.HasPrefix(warned[0], `grants[0].identity "spiffe://corp.example/ns/payments/*": '*' and '?' now match within one path segment`) {
		t.Errorf("warnings %q, %v; want one for grants[0]", warned, err)
	}
	if err := CheckPolicy([]byte(`grants: [{identity: "api.corp.example", list: ["*"]}]`), nil); err == nil ||
		err.Error() != `grants[0].identity "api.corp.example" is neither a SPIFFE ID pattern (spiffe://TRUST-DOMAIN/PATH) nor a DNS name pattern (dns:NAME): a certificate's DNS SAN is the identity "dns:api.corp.example"` {
		t.Errorf("a bare DNS name grant: %v", err)
	}
}

// The identity a certificate's SANs give, or why they give none.
func TestCertIdentity(t *testing.T) {
	u := func(ss ...string) []string { return ss }
	for _, c := range []struct {
		uris []string
		dns  []string
		want string // identity, or "!" and part of the error
	}{
		{u("spiffe://signet.dev/team/security"), nil, "spiffe://signet.dev/team/security"},
		{u("spiffe://signet.dev/team/security"), []string{"host.example"}, "spiffe://signet.dev/team/security"},
		{nil, []string{"spiffe://signet.dev/team/security"}, "dns:spiffe://signet.dev/team/security"},
		{nil, []string{"Host.Example", "other.example"}, "dns:host.example"},
		{u("spiffe://signet.dev/a", "spiffe://signet.dev/b"), nil, "!has 2 URI SANs"},
		{u("spiffe://signet.dev/a", "https://x.example"), []string{"host.example"}, "!has 2 URI SANs"},
		{u("https://signet.dev/a"), []string{"host.example"}, "!is not a SPIFFE ID"},
		{u("spiffe://signet.dev/a?x=1"), nil, "!is not a SPIFFE ID"},
		{u("spiffe://signet.dev/a#f"), nil, "!is not a SPIFFE ID"},
		{u("spiffe://signet.dev/a/../b"), nil, "!dot segments"},
		{u("spiffe://signet.dev/a/"), nil, "!trailing slash"},
		{u("spiffe://Signet.dev/a"), nil, "!trust domain characters"},
		{u("spiffe://signet.dev"), nil, "!names a trust domain, not a workload"},
		{u("SPIFFE://signet.dev/a"), nil, "!is not a SPIFFE ID"},
		{u("spiffe://signet.dev/a#"), nil, "!is not a SPIFFE ID"},
		{u("spiffe://signet.dev/a?"), nil, "!is not a SPIFFE ID"},
		{nil, nil, "!names no identity"},
		{nil, []string{""}, "!names no identity"},
	} {
		id, err := certIdentity(c.uris, c.dns)
		if want, ok := strings.CutPrefix(c.want, "!"); ok {
			if err == nil || !strings.Contains(err.Error(), want) || err.(*Error).Reason != Unauthenticated {
				t.Errorf("%v %v: %q, %v; want an error with %q", c.uris, c.dns, id, err, want)
			}
		} else if err != nil || id != c.want {
			t.Errorf("%v %v: %q, %v; want %q", c.uris, c.dns, id, err, c.want)
		}
	}
}

// FuzzCertIdentity builds a certificate from a random set of URI and DNS
// SANs, signed by a CA, and authenticates it as a connection would: an
// identity is a SPIFFE ID only when the certificate has exactly one URI
// SAN and it is that ID, a dns: identity only without URI SANs, and a
// SPIFFE grant never matches a dns: identity (nor the reverse).
func FuzzCertIdentity(f *testing.F) {
	f.Add("spiffe://signet.dev/team/security", "")
	f.Add("", "spiffe://signet.dev/team/security")
	f.Add("spiffe://signet.dev/a\nspiffe://signet.dev/b", "host.example")
	f.Add("spiffe://signet.dev/team/security?x#y", "a.example\nb.example")
	f.Add("SPIFFE://signet.dev/team/../security/", "")
	f.Add("SPIFFE://signet.dev/team/security", "")
	f.Add("spiffe://signet.dev/team/security#", "")
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fuzz CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		f.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	c := &certificates{}
	c.cur.Store(&certState{pool: pool})
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	spiffeGrant, _ := parseIDPattern("spiffe://signet.dev/**")
	dnsGrant, _ := parseIDPattern("dns:**")
	f.Fuzz(func(t *testing.T, uriList, dnsList string) {
		var uris, dns []string
		for _, s := range strings.Split(uriList, "\n") {
			if s != "" {
				uris = append(uris, s)
			}
		}
		for _, s := range strings.Split(dnsList, "\n") {
			if s != "" {
				dns = append(dns, s)
			}
		}
		// The SANs go in as written (not through url.URL, which
		// normalises): a CA may sign any bytes.
		der, err := rawSANCert(ca, caKey, leafKey, uris, dns)
		if err != nil {
			return // not a certificate a CA could issue (a SAN that is not IA5, ...)
		}
		leaf, err := x509.ParseCertificate(der)
		if err != nil {
			return // nor one a TLS stack would accept from the peer
		}
		id, err := c.authenticate([]*x509.Certificate{leaf}, now)
		if err != nil {
			if err.(*Error).Reason != Unauthenticated {
				t.Fatalf("refusal %v is not Unauthenticated", err)
			}
			return
		}
		switch {
		case strings.HasPrefix(id, spiffePrefix):
			parsed, perr := spiffeid.FromString(id)
			if len(uris) != 1 || uris[0] != id || perr != nil || parsed.Path() == "" {
				t.Fatalf("SPIFFE identity %q from URIs %q: %v", id, uris, perr)
			}
			if dnsGrant.match(id) {
				t.Fatalf("dns:** matches SPIFFE identity %q", id)
			}
		case strings.HasPrefix(id, dnsPrefix):
			if len(uris) != 0 || len(dns) == 0 || id != dnsPrefix+strings.ToLower(dns[0]) {
				t.Fatalf("DNS identity %q from URIs %q, DNS names %q", id, uris, dns)
			}
			if spiffeGrant.match(id) {
				t.Fatalf("a SPIFFE grant matches DNS identity %q", id)
			}
		default:
			t.Fatalf("identity %q is in no namespace", id)
		}
	})
}

// rawSANCert is a client certificate signed by ca whose subjectAltName holds
// uris and dns byte for byte as given.
func rawSANCert(ca *x509.Certificate, caKey, leafKey *ecdsa.PrivateKey, uris, dns []string) ([]byte, error) {
	var names []byte
	for _, n := range []struct {
		tag int
		ss  []string
	}{{2, dns}, {6, uris}} {
		for _, s := range n.ss {
			b, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: n.tag, Bytes: []byte(s)})
			if err != nil {
				return nil, err
			}
			names = append(names, b...)
		}
	}
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if len(names) > 0 {
		v, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSequence, IsCompound: true, Bytes: names})
		if err != nil {
			return nil, err
		}
		tmpl.ExtraExtensions = []pkix.Extension{{Id: oidSubjectAltName, Value: v}}
	}
	return x509.CreateCertificate(rand.Reader, tmpl, ca, &leafKey.PublicKey, caKey)
}

// A URI SAN is judged as the CA signed it: crypto/x509's url.URL would
// read "SPIFFE://..." and a trailing empty "#" as the plain SPIFFE ID.
func TestCertIdentityRawURISAN(t *testing.T) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	c := &certificates{}
	c.cur.Store(&certState{pool: pool})
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	for raw, want := range map[string]string{
		"spiffe://signet.dev/team/security":  "spiffe://signet.dev/team/security",
		"SPIFFE://signet.dev/team/security":  "",
		"Spiffe://signet.dev/team/security":  "",
		"spiffe://signet.dev/team/security#": "",
	} {
		der, err := rawSANCert(ca, caKey, leafKey, []string{raw}, []string{"host.example"})
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatalf("%q: %v", raw, err)
		}
		id, err := c.authenticate([]*x509.Certificate{leaf}, now)
		if want == "" && err == nil {
			t.Errorf("URI SAN %q: authenticated as %q", raw, id)
		} else if want != "" && (err != nil || id != want) {
			t.Errorf("URI SAN %q: %q, %v; want %q", raw, id, err, want)
		}
	}
}
