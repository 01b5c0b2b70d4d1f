package authz

import (
	"crypto/tls"
	"crypto/x509"
	encpem "encoding/pem"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// certificates holds the server certificate and the client CA pool, read
// from files and read again by the Watcher whenever one of them changes, so
// that rotated certificates take effect with no restart.
type certificates struct {
	certFile, keyFile, caFile string

	cur atomic.Pointer[certState]

	// verified remembers, per connection's leaf certificate, the identity
	// it was verified to have and against which CA pool: chain verification
	// costs more than a signature, and a connection carries many RPCs.
	verifiedMu sync.Mutex
	verified   map[*x509.Certificate]verifiedCaller
}

type certState struct {
	cert *tls.Certificate
	pool *x509.CertPool
	// notAfter of the serving certificate and of the first client CA
	// certificate to expire.
	servingNotAfter, caNotAfter time.Time
}

type verifiedCaller struct {
	pool *x509.CertPool
	id   string
}

func loadCertificates(certFile, keyFile, caFile string) (*certificates, error) {
	c := &certificates{certFile: certFile, keyFile: keyFile, caFile: caFile}
	if err := c.reload(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *certificates) files() []string { return []string{c.certFile, c.keyFile, c.caFile} }

// reload reads the three files; on error the ones in force stay.
func (c *certificates) reload() error {
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("grpc.tls: server certificate: %w", err)
	}
	pem, err := os.ReadFile(c.caFile)
	if err != nil {
		return fmt.Errorf("grpc.tls.client_ca_file: %w", err)
	}
	st := &certState{cert: &cert, pool: x509.NewCertPool(), servingNotAfter: cert.Leaf.NotAfter}
	for rest := pem; ; {
		var block *encpem.Block
		if block, rest = encpem.Decode(rest); block == nil {
			break
		}
		ca, err := x509.ParseCertificate(block.Bytes)
		if block.Type != "CERTIFICATE" || err != nil {
			continue
		}
		st.pool.AddCert(ca)
		if st.caNotAfter.IsZero() || ca.NotAfter.Before(st.caNotAfter) {
			st.caNotAfter = ca.NotAfter
		}
	}
	if st.caNotAfter.IsZero() {
		return fmt.Errorf("grpc.tls.client_ca_file %s holds no PEM certificate", c.caFile)
	}
	c.cur.Store(st)
	return nil
}

// serverTLS is TLS 1.3 that asks every client for a certificate. The
// certificate is verified by authenticate, not by the handshake, so that a
// missing or untrusted one is answered with gRPC Unauthenticated rather than
// a failed connection.
func (c *certificates) serverTLS() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequestClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return c.cur.Load().cert, nil
		},
	}
}

// authenticate verifies the caller's certificate chain (leaf first) against
// the client CA and returns its identity (certIdentity): the SPIFFE ID of
// its one URI SAN, or dns: and its first DNS SAN if it has no URI SAN.
func (c *certificates) authenticate(chain []*x509.Certificate, now time.Time) (string, error) {
	if len(chain) == 0 {
		return "", errorf(Unauthenticated, "a client certificate is required")
	}
	pool := c.cur.Load().pool
	leaf := chain[0]
	c.verifiedMu.Lock()
	v, ok := c.verified[leaf]
	c.verifiedMu.Unlock()
	if ok && v.pool == pool && now.Before(leaf.NotAfter) {
		return v.id, nil
	}
	inter := x509.NewCertPool()
	for _, ic := range chain[1:] {
		inter.AddCert(ic)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		var unknown x509.UnknownAuthorityError
		if errors.As(err, &unknown) {
			return "", errorf(Unauthenticated, "the client certificate is not signed by a trusted CA")
		}
		return "", errorf(Unauthenticated, "the client certificate is not valid: %v", err)
	}
	uris, err := uriSANs(leaf)
	if err != nil {
		return "", err
	}
	id, err := certIdentity(uris, leaf.DNSNames)
	if err != nil {
		return "", err
	}
	c.verifiedMu.Lock()
	if c.verified == nil || len(c.verified) >= 4096 { // forget closed connections wholesale
		c.verified = map[*x509.Certificate]verifiedCaller{}
	}
	c.verified[leaf] = verifiedCaller{pool, id}
	c.verifiedMu.Unlock()
	return id, nil
}
