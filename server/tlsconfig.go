package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// certificates holds the server certificate and the client CA pool, read
// from files and read again whenever one of the files changes, so that
// rotated certificates take effect with no restart.
type certificates struct {
	certFile, keyFile, caFile string
	log                       *slog.Logger

	mu      sync.Mutex
	stamp   string // sizes and modification times of the three files
	checked time.Time
	cert    *tls.Certificate
	pool    *x509.CertPool

	// verified remembers, per connection's leaf certificate, the identity
	// it was verified to have and against which CA pool: chain verification
	// costs more than a signature, and a connection carries many RPCs.
	verifiedMu sync.Mutex
	verified   map[*x509.Certificate]verifiedCaller
}

type verifiedCaller struct {
	pool *x509.CertPool
	id   string
}

func newCertificates(certFile, keyFile, caFile string, log *slog.Logger) (*certificates, error) {
	c := &certificates{certFile: certFile, keyFile: keyFile, caFile: caFile, log: log}
	if err := c.reload(); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *certificates) fileStamp() string {
	var b bytes.Buffer
	for _, f := range []string{c.certFile, c.keyFile, c.caFile} {
		if fi, err := os.Stat(f); err == nil {
			fmt.Fprintf(&b, "%d/%d;", fi.Size(), fi.ModTime().UnixNano())
		}
	}
	return b.String()
}

func (c *certificates) reload() error {
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("grpc.tls: server certificate: %w", err)
	}
	pem, err := os.ReadFile(c.caFile)
	if err != nil {
		return fmt.Errorf("grpc.tls.client_ca_file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("grpc.tls.client_ca_file %s holds no PEM certificate", c.caFile)
	}
	c.cert, c.pool, c.stamp = &cert, pool, c.fileStamp()
	return nil
}

// current returns the certificate and pool, re-reading the files (at most
// once a second) when they changed. A broken new file keeps the old ones.
func (c *certificates) current() (*tls.Certificate, *x509.CertPool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.checked) >= time.Second {
		c.checked = time.Now()
		if stamp := c.fileStamp(); stamp != c.stamp {
			old := c.stamp
			if err := c.reload(); err != nil {
				c.stamp = old
				c.log.Error("certificate files changed but cannot be loaded; keeping the old ones", "err", err)
			} else {
				c.log.Info("reloaded TLS certificates", "cert", c.certFile, "client_ca", c.caFile)
			}
		}
	}
	return c.cert, c.pool
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
			cert, _ := c.current()
			return cert, nil
		},
	}
}

// authenticate verifies the caller's certificate against the client CA and
// returns its identity: the SPIFFE URI SAN when present, else the first DNS
// SAN.
func (c *certificates) authenticate(ctx context.Context) (string, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return "", status.Error(codes.Unauthenticated, "no peer information")
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return "", status.Error(codes.Unauthenticated, "a client certificate is required")
	}
	_, pool := c.current()
	leaf := info.State.PeerCertificates[0]
	c.verifiedMu.Lock()
	v, ok := c.verified[leaf]
	c.verifiedMu.Unlock()
	if ok && v.pool == pool && time.Now().Before(leaf.NotAfter) {
		return v.id, nil
	}
	inter := x509.NewCertPool()
	for _, ic := range info.State.PeerCertificates[1:] {
		inter.AddCert(ic)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		var unknown x509.UnknownAuthorityError
		if errors.As(err, &unknown) {
			return "", status.Error(codes.Unauthenticated, "the client certificate is not signed by a trusted CA")
		}
		return "", status.Errorf(codes.Unauthenticated, "the client certificate is not valid: %v", err)
	}
	id := certIdentity(leaf.URIs, leaf.DNSNames)
	if id == "" {
		return "", status.Error(codes.Unauthenticated, "the client certificate has neither a spiffe:// URI SAN nor a DNS SAN")
	}
	c.verifiedMu.Lock()
	if c.verified == nil || len(c.verified) >= 4096 { // forget closed connections wholesale
		c.verified = map[*x509.Certificate]verifiedCaller{}
	}
	c.verified[leaf] = verifiedCaller{pool, id}
	c.verifiedMu.Unlock()
	return id, nil
}

func certIdentity(uris []*url.URL, dns []string) string {
	for _, u := range uris {
		if u.Scheme == "spiffe" {
			return u.String()
		}
	}
	if len(dns) > 0 {
		return dns[0]
	}
	return ""
}
