package server

import (
	"crypto/x509/pkix"
	"fmt"
	"net/url"
	"os"

	"github.com/signet-dev/signet/server/config"
	"github.com/signet-dev/signet/server/lifecycle"
	"github.com/signet-dev/signet/server/x5c"
	"github.com/signet-dev/signet/server/x5c/vaultpki"
)

// certSpec turns a ring's x5c block (with its defaults) into the key set's
// certificate spec; nil for a ring without certificates. A Vault PKI
// token comes from the environment variable the block names.
func certSpec(rc config.RingConfig, issuer string, getenv func(string) string) (*lifecycle.CertSpec, error) {
	x := rc.CertDefaults(issuer)
	if x == nil {
		return nil, nil
	}
	if getenv == nil {
		getenv = os.Getenv
	}
	p := x5c.Profile{Subject: pkix.Name{CommonName: x.Subject.CommonName, Organization: x.Subject.Organization,
		OrganizationalUnit: x.Subject.OrganizationalUnit, Country: x.Subject.Country},
		DNSNames: x.DNSNames, Validity: x.Validity.D(), RenewBefore: x.RenewBefore.D()}
	for _, s := range x.URIs {
		u, err := url.Parse(s)
		if err != nil {
			return nil, fmt.Errorf("key ring %q: x5c.uris: %v", rc.Name, err)
		}
		p.URIs = append(p.URIs, u)
	}
	spec := &lifecycle.CertSpec{Profile: p, Required: *x.Required}
	switch {
	case rc.IsCA():
	case x.SelfSigned:
		spec.Source = lifecycle.SourceSelfSigned
	case x.CARing != "":
		spec.Source, spec.CARing = lifecycle.SourceCARing, x.CARing
	case x.VaultPKI != nil:
		v := x.VaultPKI
		token := getenv(v.TokenEnv)
		if token == "" {
			return nil, fmt.Errorf("key ring %q: x5c.vault_pki: the environment variable %s holds no Vault token", rc.Name, v.TokenEnv)
		}
		pki, err := vaultpki.New(v.Address, v.Mount, v.Role, token, v.AllowHTTP)
		if err != nil {
			return nil, fmt.Errorf("key ring %q: %w", rc.Name, err)
		}
		spec.Source, spec.VaultPKI = lifecycle.SourceVaultPKI, pki
	}
	return spec, nil
}
