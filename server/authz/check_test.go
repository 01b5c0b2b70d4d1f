package authz

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/signet-dev/signet/backends/local"
)

// CheckConfig refuses a policy with exactly the message startup (New)
// gives, and reads the policy only through readFile.
func TestCheckConfigSaysWhatStartupSays(t *testing.T) {
	dir := t.TempDir()
	cert, key, ca := selfSigned(t, dir)
	policy := filepath.Join(dir, "policy.yaml")
	os.WriteFile(policy, []byte("grants: [{identity: 'dns:x', sign: [{key_rings: [default], audiences: [a], max_ttl: 2h}]}]\n"), 0o600)
	cfg := []byte(`grpc:
  listen: 0.0.0.0:9090
  tls: {cert_file: ` + cert + `, key_file: ` + key + `, client_ca_file: ` + ca + `}
policy_file: ` + policy + `
key_rings: [{name: default, backend: 'local://` + dir + `'}]
`)
	_, checkErr := CheckConfig(cfg, os.ReadFile)
	_, startErr := New(Config{CertFile: cert, KeyFile: key, ClientCAFile: ca, PolicyFile: policy,
		Rings: map[string]time.Duration{"default": time.Hour}})
	if checkErr == nil || startErr == nil || checkErr.Error() != startErr.Error() ||
		!strings.HasPrefix(checkErr.Error(), "policy_file "+policy+": grants[0].sign[0].max_ttl") {
		t.Errorf("check-config says %v, startup %v", checkErr, startErr)
	}

	var asked []string
	_, err := CheckConfig(cfg, func(p string) ([]byte, error) {
		asked = append(asked, p)
		return nil, errors.New("not here")
	})
	if len(asked) != 1 || asked[0] != policy || err == nil || err.Error() != "policy_file: not here" {
		t.Errorf("CheckConfig read %v and said %v", asked, err)
	}
	if err := CheckPolicy([]byte("grants: [{identity: 'dns:x', list: ['*']}]"), nil); err != nil {
		t.Errorf("a list grant: %v", err)
	}
}

// selfSigned writes a self-signed certificate, its key and itself as the CA.
func selfSigned(t *testing.T, dir string) (cert, key, ca string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "signet test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(k)
	cert, key, ca = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "ca.crt")
	for path, block := range map[string]*pem.Block{cert: {Type: "CERTIFICATE", Bytes: der}, ca: {Type: "CERTIFICATE", Bytes: der},
		key: {Type: "PRIVATE KEY", Bytes: kder}} {
		if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return cert, key, ca
}

// Startup logs the warnings check-config prints, so an upgrade that skipped
// check-config still says which grants now match less.
func TestStartupLogsPolicyWarnings(t *testing.T) {
	dir := t.TempDir()
	cert, key, ca := selfSigned(t, dir)
	policy := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policy, []byte("grants: [{identity: 'spiffe://corp.example/ns/*', list: ['*']}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var logged bytes.Buffer
	a, err := New(Config{CertFile: cert, KeyFile: key, ClientCAFile: ca, PolicyFile: policy,
		Logger: slog.New(slog.NewTextHandler(&logged, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if want := `grants[0].identity \"spiffe://corp.example/ns/*\": '*' and '?' now match within one path segment`; !strings.Contains(logged.String(), want) ||
		!strings.Contains(logged.String(), "level=WARN") {
		t.Errorf("startup logged:\n%s\nwant a warning with %s", logged.String(), want)
	}
}
