package authz

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// Peers are the identities allowed to be replicas of this deployment
// (peers.identities): what a peer's server certificate must name when this
// replica asks it for the key set, and what a caller's client certificate
// must name for this replica to answer. Patterns as in the policy.
type Peers struct {
	patterns []idPattern
}

// ParsePeers parses peers.identities.
func ParsePeers(ids []string) (Peers, error) {
	var p Peers
	for i, s := range ids {
		pat, err := parseIDPattern(s)
		if err != nil {
			return Peers{}, fmt.Errorf("peers.identities[%d] %q %v", i, s, err)
		}
		p.patterns = append(p.patterns, pat)
	}
	return p, nil
}

// Allows reports whether id, an identity Authenticate or VerifyServer
// established, is a peer's.
func (p Peers) Allows(id string) bool {
	for _, pat := range p.patterns {
		if pat.match(id) {
			return true
		}
	}
	return false
}

// VerifyServer verifies a peer's server certificate chain (leaf first)
// against roots for server authentication and returns the identity its
// leaf names (the same rules as a caller's), or an error if it names no
// peer's.
func (p Peers) VerifyServer(chain []*x509.Certificate, roots *x509.CertPool, now time.Time) (string, error) {
	if len(chain) == 0 {
		return "", errors.New("the peer presented no certificate")
	}
	inter := x509.NewCertPool()
	for _, c := range chain[1:] {
		inter.AddCert(c)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return "", fmt.Errorf("the peer's certificate does not verify: %w", err)
	}
	uris, err := uriSANs(chain[0])
	if err != nil {
		return "", err
	}
	id, err := certIdentity(uris, chain[0].DNSNames)
	if err != nil {
		return "", err
	}
	if !p.Allows(id) {
		return "", fmt.Errorf("the peer's certificate names %q, which is not one of peers.identities", id)
	}
	return id, nil
}

// ClientCertificate is the certificate this replica presents when it asks
// a peer: its gRPC server certificate in force (grpc.tls.cert_file), which
// must allow client authentication too. Nil in development mode.
func (a *Authorizer) ClientCertificate() func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if a.certs == nil {
		return nil
	}
	return func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return a.certs.cur.Load().cert, nil }
}
