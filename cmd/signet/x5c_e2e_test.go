package main

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// `signet keys` shows each version's certificate, and `signet x5c` prints a
// ring's chain as PEM, which OpenSSL verifies against the CA ring's
// certificate that `signet x5c --key-ring CA` prints.
func TestX5CCommands(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := fmt.Sprintf("%skey_rings:\n"+
		"  - {name: corp-ca, backend: 'local://%[2]s', algorithm: ES384, usage: ca, x5c: {subject: {common_name: Signet e2e CA}}}\n"+
		"  - {name: default, backend: 'local://%[2]s', algorithm: ES256, x5c: {ca_ring: corp-ca}}\n"+
		"  - {name: self, backend: 'local://%[2]s', algorithm: EdDSA, x5c: {self_signed: true}}\n", configHead, dir)
	p := startSignetWith(t, cfg)

	keys := runCLI(t, "keys", "--server", p.grpcAddr)
	for _, want := range []string{"SUBJECT", "ISSUER", "SERIAL", "NOT AFTER", "CN=default", "CN=Signet e2e CA", "CN=self"} {
		if !strings.Contains(keys, want) {
			t.Errorf("signet keys does not show %q:\n%s", want, keys)
		}
	}

	status := runCLI(t, "status", "--admin", strings.TrimPrefix(p.adminURL, "http://"))
	for _, want := range []string{"CA ring", "certificate CN=default", "certificate CN=Signet e2e CA"} {
		if !strings.Contains(status, want) {
			t.Errorf("signet status does not show %q:\n%s", want, status)
		}
	}

	leaf := runCLI(t, "x5c", "--server", p.grpcAddr, "--key-ring", "default")
	ca := runCLI(t, "x5c", "--server", p.grpcAddr, "--key-ring", "corp-ca")
	var certs []*x509.Certificate
	for rest := []byte(leaf); ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	if len(certs) != 2 || certs[0].Subject.CommonName != "default" || certs[1].Subject.CommonName != "Signet e2e CA" {
		t.Fatalf("signet x5c --key-ring default printed %d certificates:\n%s", len(certs), leaf)
	}
	tmp := t.TempDir()
	leafFile, caFile := filepath.Join(tmp, "leaf.pem"), filepath.Join(tmp, "ca.pem")
	os.WriteFile(leafFile, []byte(leaf), 0o600)
	os.WriteFile(caFile, []byte(ca), 0o600)
	if out, err := exec.Command("openssl", "verify", "-CAfile", caFile, leafFile).CombinedOutput(); err != nil || !strings.Contains(string(out), ": OK") {
		t.Errorf("openssl verify of what signet x5c printed: %v\n%s", err, out)
	}
	if out := runCLIFail(t, "x5c", "--server", p.grpcAddr, "--key-ring", "default", "--kid", "nope"); !strings.Contains(out, "no version with kid") {
		t.Errorf("signet x5c with an unknown kid:\n%s", out)
	}
	if out := runCLIFail(t, "x5c", "--server", p.grpcAddr); !strings.Contains(out, "--key-ring") {
		t.Errorf("signet x5c without --key-ring:\n%s", out)
	}
}
