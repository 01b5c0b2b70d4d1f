// Package testtls is the certificate authority of the HTTPS and gRPC test
// servers that stand in for cloud services (internal/gcpkmstest,
// internal/azurekvtest). The official SDKs talk to them over TLS with the
// system's trust store, exactly as in production; a test makes them trust
// this process's CA through SSL_CERT_FILE (CAFile), which Go reads when it
// first loads the system roots. TESTS ONLY: the CA's key lives in memory
// and is made afresh by every process.
package testtls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

type authority struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

var (
	once sync.Once
	ca   authority
)

func theCA() authority {
	once.Do(func() {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "signet test CA"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			panic(err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			panic(err)
		}
		ca = authority{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
	})
	return ca
}

// CAPEM is the CA certificate, PEM-encoded.
func CAPEM() []byte { return theCA().pem }

// Pool is a certificate pool holding only the CA.
func Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(theCA().cert)
	return p
}

// CAFile writes the CA certificate into dir and returns its path, for
// SSL_CERT_FILE.
func CAFile(dir string) (string, error) {
	path := filepath.Join(dir, "signet-test-ca.pem")
	return path, os.WriteFile(path, CAPEM(), 0o600)
}

// ServerConfig is a TLS configuration with a certificate for 127.0.0.1,
// issued by the CA.
func ServerConfig() *tls.Config {
	a := theCA()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, &key.PublicKey, a.key)
	if err != nil {
		panic(err)
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, NextProtos: []string{"h2", "http/1.1"},
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}
