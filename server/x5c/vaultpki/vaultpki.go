// Package vaultpki is the client of a Vault PKI secrets engine that
// issues a ring's leaf certificates (x5c.vault_pki) from certification
// requests the ring's own backend signed.
package vaultpki

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	vault "github.com/hashicorp/vault/api"

	"github.com/signet-dev/signet/backends"
	"github.com/signet-dev/signet/server/x5c"
)

// Client issues leaf certificates from an existing Vault PKI secrets
// engine: Signet sends a certification request that the ring's own
// backend signed (proof of possession; the key never leaves its backend)
// to <mount>/sign/<role>, and stores the chain Vault returns.
type Client struct {
	client *vault.Client
	mount  string
	role   string
}

// New makes a client of the PKI engine at address (mount and role
// as the engine names them), authenticated with token. The address must be
// https, so that the token never travels in clear, unless allowHTTP.
func New(address, mount, role, token string, allowHTTP bool) (*Client, error) {
	u, err := url.Parse(address)
	if err != nil || (u.Scheme != "https" && (u.Scheme != "http" || !allowHTTP)) {
		return nil, fmt.Errorf("vault_pki: address %q: want an https URL (http only with allow_http: true)", address)
	}
	cfg := vault.DefaultConfig()
	cfg.Address = address
	cfg.MaxRetries = 0
	c, err := vault.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("vault_pki: %v", err)
	}
	c.SetToken(token)
	return &Client{client: c, mount: strings.Trim(mount, "/"), role: role}, nil
}

// Issue has Vault sign csr (DER) for validity, and returns the chain: the
// new certificate first, then the CA chain Vault reports.
func (p *Client) Issue(ctx context.Context, csr []byte, p2 x5c.Profile) ([][]byte, error) {
	data := map[string]any{
		"csr": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr})),
		"ttl": fmt.Sprintf("%ds", int64(p2.Validity/time.Second)), "format": "pem",
	}
	if cn := p2.Subject.CommonName; cn != "" {
		data["common_name"] = cn
	}
	var uris []string
	for _, u := range p2.URIs {
		uris = append(uris, u.String())
	}
	if len(uris) > 0 {
		data["uri_sans"] = strings.Join(uris, ",")
	}
	if len(p2.DNSNames) > 0 {
		data["alt_names"] = strings.Join(p2.DNSNames, ",")
	}
	path := p.mount + "/sign/" + p.role
	sec, err := p.client.Logical().WriteWithContext(ctx, path, data)
	if err != nil {
		return nil, backends.Errorf(classify(err), "vault_pki", "signing the certification request at %s: %v", path, err)
	}
	if sec == nil || sec.Data == nil {
		return nil, backends.Errorf(backends.KindUnavailable, "vault_pki", "%s returned no certificate", path)
	}
	pems := []string{fmt.Sprint(sec.Data["certificate"])}
	if chain, ok := sec.Data["ca_chain"].([]any); ok && len(chain) > 0 {
		for _, c := range chain {
			pems = append(pems, fmt.Sprint(c))
		}
	} else if ca, ok := sec.Data["issuing_ca"].(string); ok {
		pems = append(pems, ca)
	}
	out, err := backends.DecodePEMChain([]byte(strings.Join(pems, "\n")))
	if err != nil {
		return nil, backends.Errorf(backends.KindFailedPrecondition, "vault_pki", "%s returned an unusable chain: %v", path, err)
	}
	if len(out) == 0 {
		return nil, backends.Errorf(backends.KindUnavailable, "vault_pki", "%s returned no PEM certificate", path)
	}
	return out, nil
}

// classify says what a failed call to Vault PKI means: a refusal for want
// of permission, a request Vault will never accept (a wrong mount or role,
// a request the role forbids), or an outage worth retrying (no answer, a
// 5xx, throttling with 429).
func classify(err error) backends.Kind {
	var re *vault.ResponseError
	if !errors.As(err, &re) {
		return backends.KindUnavailable
	}
	switch {
	case re.StatusCode == http.StatusForbidden || re.StatusCode == http.StatusUnauthorized:
		return backends.KindPermissionDenied
	case re.StatusCode == http.StatusTooManyRequests || re.StatusCode >= 500:
		return backends.KindUnavailable
	case re.StatusCode >= 400:
		return backends.KindFailedPrecondition
	}
	return backends.KindUnavailable
}
