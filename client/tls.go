package signetclient

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"

	"google.golang.org/grpc/credentials"
)

// fileCredentials is mTLS from files that are read again at each new
// connection, and loaded again if their contents changed (a hash of the
// three, so that a replacement of the same size within the modification
// time's resolution is seen too), so that a certificate rotated on disk is
// presented from the next connection on. A change that does not load (a
// file half-written) keeps the last good set, and is tried again at the
// next connection.
type fileCredentials struct {
	certFile, keyFile, caFile string

	mu         sync.Mutex
	serverName string
	sum        [sha256.Size]byte // of the files creds was loaded from
	creds      credentials.TransportCredentials
}

func newFileCredentials(certFile, keyFile, caFile, serverName string) (*fileCredentials, error) {
	f := &fileCredentials{certFile: certFile, keyFile: keyFile, caFile: caFile, serverName: serverName}
	if _, err := f.current(); err != nil {
		return nil, err
	}
	return f, nil
}

func (f *fileCredentials) current() (credentials.TransportCredentials, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	files, err := readFiles(f.certFile, f.keyFile, f.caFile)
	if err != nil {
		if f.creds != nil {
			return f.creds, nil // keep the last good files until the change completes
		}
		return nil, err
	}
	h := sha256.New()
	for _, b := range files {
		fmt.Fprintf(h, "%d:", len(b))
		h.Write(b)
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	if f.creds != nil && sum == f.sum {
		return f.creds, nil
	}
	cfg, err := loadTLS(files[0], files[1], files[2], f.certFile, f.keyFile, f.caFile)
	if err != nil {
		if f.creds != nil {
			return f.creds, nil // keep the last good files until the change completes
		}
		return nil, err
	}
	cfg.ServerName = f.serverName
	f.creds, f.sum = credentials.NewTLS(cfg), sum
	return f.creds, nil
}

// readFiles reads the certificate, key and CA files (each a few KiB).
func readFiles(paths ...string) ([][]byte, error) {
	out := make([][]byte, len(paths))
	for i, p := range paths {
		b, err := os.ReadFile(p) // #nosec G304 -- the files the caller configures
		if err != nil {
			return nil, err
		}
		out[i] = b
	}
	return out, nil
}

func loadTLS(certPEM, keyPEM, caPEM []byte, certFile, keyFile, caFile string) (*tls.Config, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("client certificate %s / key %s: %w", certFile, keyFile, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("CA file %s holds no PEM certificate", caFile)
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{pair}, RootCAs: pool}, nil
}

func (f *fileCredentials) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	c, err := f.current()
	if err != nil {
		return nil, nil, err
	}
	return c.ClientHandshake(ctx, authority, conn)
}

func (f *fileCredentials) ServerHandshake(net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("signetclient: client credentials cannot serve")
}

func (f *fileCredentials) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls"}
}

func (f *fileCredentials) Clone() credentials.TransportCredentials {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &fileCredentials{certFile: f.certFile, keyFile: f.keyFile, caFile: f.caFile, serverName: f.serverName,
		sum: f.sum, creds: f.creds}
}

// OverrideServerName is gRPC's deprecated way to set the name the server's
// certificate must have; Config.ServerName is this package's.
func (f *fileCredentials) OverrideServerName(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.serverName, f.creds = name, nil
	return nil
}
