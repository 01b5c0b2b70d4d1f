package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// Development identities that dev-certs issues certificates for.
const (
	devServiceID  = "spiffe://signet.dev/service/demo"
	devSecurityID = "spiffe://signet.dev/team/security"
)

func runDevCerts(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("dev-certs", "[--dir ./dev-certs]",
		"Creates a development CA, a server certificate for 127.0.0.1/localhost, two client certificates\n"+
			"(a service, "+devServiceID+", and the security team, "+devSecurityID+"),\n"+
			"a policy granting them sign and rotate, and a config that uses them all. Not for production.", stderr)
	dir := fs.String("dir", "dev-certs", "directory to write into (created; existing files are kept)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return err
	}
	if _, err := os.Stat(filepath.Join(*dir, "ca.pem")); err == nil {
		return fmt.Errorf("%s already holds a CA; remove the directory to start over", *dir)
	}
	caKey, ca, err := issue(nil, nil, pkix.Name{CommonName: "Signet development CA"}, nil, true)
	if err != nil {
		return err
	}
	if err := writePEM(filepath.Join(*dir, "ca.pem"), "CERTIFICATE", ca.Raw); err != nil {
		return err
	}
	certs := []struct {
		name string
		uri  string
		dns  []string
		ips  []net.IP
	}{
		{"server", "", []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}},
		{"service", devServiceID, nil, nil},
		{"security", devSecurityID, nil, nil},
	}
	for _, c := range certs {
		var uris []*url.URL
		if c.uri != "" {
			u, _ := url.Parse(c.uri)
			uris = append(uris, u)
		}
		key, cert, err := issueLeaf(caKey, ca, c.name, uris, c.dns, c.ips)
		if err != nil {
			return err
		}
		der, _ := x509.MarshalPKCS8PrivateKey(key)
		if err := writePEM(filepath.Join(*dir, c.name+".pem"), "CERTIFICATE", cert.Raw); err != nil {
			return err
		}
		if err := writePEM(filepath.Join(*dir, c.name+"-key.pem"), "PRIVATE KEY", der); err != nil {
			return err
		}
	}
	policy := fmt.Sprintf(`# Development policy: deny by default, these grants only.
grants:
  - identity: %q
    sign:
      - key_rings: [default]
        audiences: ["demo-*"]
        subjects: ["$caller"]
        claims: [scope]
        max_ttl: 15m
        rate: {per_second: 100, burst: 200}
    list: [default]
  - identity: %q
    rotate: ["*"]
    list: ["*"]
`, devServiceID, devSecurityID)
	if err := os.WriteFile(filepath.Join(*dir, "policy.yaml"), []byte(policy), 0o600); err != nil {
		return err
	}
	abs, _ := filepath.Abs(*dir)
	config := fmt.Sprintf(`# Signet with mTLS, from signet dev-certs.
grpc:
  listen: 127.0.0.1:9443
  tls:
    cert_file: %[1]s/server.pem
    key_file: %[1]s/server-key.pem
    client_ca_file: %[1]s/ca.pem
policy_file: %[1]s/policy.yaml
audit:
  path: "-"
`, abs)
	if err := os.WriteFile(filepath.Join(*dir, "signet.yaml"), []byte(config), 0o600); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "Wrote a development CA, certificates, policy.yaml and signet.yaml to %s.\n\n", *dir)
	fmt.Fprintf(stdout, "  ./bin/signet serve --config %s/signet.yaml\n", *dir)
	fmt.Fprintf(stdout, "  ./bin/signet sign --server 127.0.0.1:9443 --ca %[1]s/ca.pem --cert %[1]s/service.pem --key %[1]s/service-key.pem --audience demo-api --subject %[2]s\n", *dir, devServiceID)
	fmt.Fprintf(stdout, "  ./bin/signet rotate --server 127.0.0.1:9443 --ca %[1]s/ca.pem --cert %[1]s/security.pem --key %[1]s/security-key.pem\n", *dir)
	return nil
}

func issue(parentKey *ecdsa.PrivateKey, parent *x509.Certificate, subject pkix.Name, tmplFn func(*x509.Certificate), isCA bool) (*ecdsa.PrivateKey, *x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: subject, NotBefore: time.Now().Add(-time.Minute),
		NotAfter: time.Now().Add(365 * 24 * time.Hour), BasicConstraintsValid: true}
	if isCA {
		tmpl.IsCA, tmpl.KeyUsage = true, x509.KeyUsageCertSign|x509.KeyUsageCRLSign
	}
	if tmplFn != nil {
		tmplFn(tmpl)
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return key, cert, err
}

func issueLeaf(caKey *ecdsa.PrivateKey, ca *x509.Certificate, name string, uris []*url.URL, dns []string, ips []net.IP) (*ecdsa.PrivateKey, *x509.Certificate, error) {
	return issue(caKey, ca, pkix.Name{CommonName: name}, func(c *x509.Certificate) {
		c.URIs, c.DNSNames, c.IPAddresses = uris, dns, ips
		c.KeyUsage = x509.KeyUsageDigitalSignature
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}, false)
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}
