package signetclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"

	"google.golang.org/grpc/credentials"
)

// fileCredentials is mTLS from files that are read again at each new
// connection if any of them changed (size or modification time), so that
// a certificate rotated on disk is presented from the next connection on.
// A change that does not load (a file half-written) keeps the last good
// set, and is tried again at the next connection.
type fileCredentials struct {
	certFile, keyFile, caFile string

	mu         sync.Mutex
	serverName string
	stamp      string
	creds      credentials.TransportCredentials
}

func newFileCredentials(certFile, keyFile, caFile, serverName string) (*fileCredentials, error) {
	f := &fileCredentials{certFile: certFile, keyFile: keyFile, caFile: caFile, serverName: serverName}
	if _, err := f.current(); err != nil {
		return nil, err
	}
	return f, nil
}

// stampOf identifies the files' versions.
func (f *fileCredentials) stampOf() string {
	var b strings.Builder
	for _, p := range []string{f.certFile, f.keyFile, f.caFile} {
		if st, err := os.Stat(p); err == nil {
			fmt.Fprintf(&b, "%d/%d;", st.Size(), st.ModTime().UnixNano())
		} else {
			b.WriteString("missing;")
		}
	}
	return b.String()
}

func (f *fileCredentials) current() (credentials.TransportCredentials, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	stamp := f.stampOf()
	if f.creds != nil && stamp == f.stamp {
		return f.creds, nil
	}
	cfg, err := loadTLS(f.certFile, f.keyFile, f.caFile)
	if err != nil {
		if f.creds != nil {
			return f.creds, nil // keep the last good files until the change completes
		}
		return nil, err
	}
	cfg.ServerName = f.serverName
	f.creds, f.stamp = credentials.NewTLS(cfg), stamp
	return f.creds, nil
}

func loadTLS(certFile, keyFile, caFile string) (*tls.Config, error) {
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("client certificate %s / key %s: %w", certFile, keyFile, err)
	}
	pem, err := os.ReadFile(caFile) // #nosec G304 -- the CA file the caller configures
	if err != nil {
		return nil, fmt.Errorf("CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
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
		stamp: f.stamp, creds: f.creds}
}

// OverrideServerName is gRPC's deprecated way to set the name the server's
// certificate must have; Config.ServerName is this package's.
func (f *fileCredentials) OverrideServerName(name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.serverName, f.creds = name, nil
	return nil
}
