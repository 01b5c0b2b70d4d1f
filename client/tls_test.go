package signetclient

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"
)

type testCA struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
}

func newCA(t *testing.T) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{key, cert}
}

// issue returns a leaf certificate for uri (or for 127.0.0.1) as PEM.
func (ca *testCA) issue(t *testing.T, uri string) (certPEM, keyPEM []byte) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: "leaf"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	if uri != "" {
		u, _ := url.Parse(uri)
		tmpl.URIs = []*url.URL{u}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

func write(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestFileCredentialsReload: each TLS handshake presents the client
// certificate the files hold at that moment; a file being rewritten (not
// loadable yet) keeps the last good pair.
func TestFileCredentialsReload(t *testing.T) {
	ca := newCA(t)
	dir := t.TempDir()
	certFile, keyFile, caFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem"), filepath.Join(dir, "ca.pem")
	write(t, caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}))
	c1, k1 := ca.issue(t, "spiffe://test/first")
	write(t, certFile, c1)
	write(t, keyFile, k1)

	// A real TLS server on loopback that reports the client certificate
	// of each handshake.
	sc, sk := ca.issue(t, "")
	pair, err := tls.X509KeyPair(sc, sk)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{pair},
		ClientAuth: tls.RequireAnyClientCert, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	seen := make(chan string, 4)
	go func() {
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			tc := conn.(*tls.Conn)
			if err := tc.Handshake(); err == nil {
				seen <- tc.ConnectionState().PeerCertificates[0].URIs[0].String()
			}
			conn.Close()
		}
	}()
	creds, err := newFileCredentials(certFile, keyFile, caFile, "")
	if err != nil {
		t.Fatal(err)
	}
	handshake := func() string {
		t.Helper()
		raw, err := net.Dial("tcp", lis.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer raw.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, _, err := creds.ClientHandshake(ctx, "127.0.0.1", raw)
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		defer conn.Close()
		return <-seen
	}
	if got := handshake(); got != "spiffe://test/first" {
		t.Fatalf("first handshake presented %s", got)
	}
	// A replacement that a size and modification time would miss: files
	// of the same sizes (an identity of the same length; ECDSA signatures
	// vary by a byte or two, so issue until the sizes match), stamped with
	// the old modification time, as a rewrite within the filesystem's
	// time resolution is.
	var c2, k2 []byte
	for range 100 {
		if c2, k2 = ca.issue(t, "spiffe://test/other"); len(c2) == len(c1) && len(k2) == len(k1) {
			break
		}
	}
	if len(c2) != len(c1) || len(k2) != len(k1) {
		t.Fatal("no certificate of the same size in 100 tries")
	}
	for _, f := range []struct {
		path string
		data []byte
	}{{certFile, c2}, {keyFile, k2}} {
		st, err := os.Stat(f.path)
		if err != nil {
			t.Fatal(err)
		}
		write(t, f.path, f.data)
		if err := os.Chtimes(f.path, st.ModTime(), st.ModTime()); err != nil {
			t.Fatal(err)
		}
	}
	if got := handshake(); got != "spiffe://test/other" {
		t.Fatalf("after the files changed (same sizes and times) the handshake presented %s", got)
	}
	// Half a rotation: a new certificate whose key is not written yet.
	c3, _ := ca.issue(t, "spiffe://test/third")
	write(t, certFile, c3)
	if got := handshake(); got != "spiffe://test/other" {
		t.Fatalf("with a certificate that does not match its key the handshake presented %s, want the last good one", got)
	}
	if _, err := newFileCredentials(certFile, keyFile, caFile, ""); err == nil {
		t.Error("New accepted a certificate that does not match its key")
	}
}
