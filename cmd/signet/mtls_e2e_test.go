package main

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestEndToEndMTLS follows the README's secure setup: signet dev-certs,
// serve with its certificates and policy, and the CLI with client
// certificates for a service and for the security team.
func TestEndToEndMTLS(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	if out := runCLI(t, "dev-certs", "--dir", dir); !strings.Contains(out, "signet serve --config") {
		t.Fatalf("dev-certs printed:\n%s", out)
	}
	data := t.TempDir()
	p := startSignetWith(t, func(grpcAddr, httpAddr string) string {
		return fmt.Sprintf(`issuer: http://%[2]s
grpc:
  listen: %[1]q
  tls: {cert_file: %[3]s/server.pem, key_file: %[3]s/server-key.pem, client_ca_file: %[3]s/ca.pem}
http: {listen: %[2]q}
policy_file: %[3]s/policy.yaml
audit: {path: %[3]s/audit.log}
key_rings:
  - {name: default, backend: 'local://%[4]s'}
`, grpcAddr, httpAddr, dir, data)
	})
	as := func(who string) []string {
		return []string{"--server", p.grpcAddr, "--ca", dir + "/ca.pem", "--cert", dir + "/" + who + ".pem", "--key", dir + "/" + who + "-key.pem"}
	}
	tok := strings.TrimSpace(runCLI(t, append([]string{"sign", "--audience", "demo-api", "--subject", devServiceID}, as("service")...)...))
	if out := runCLI(t, "verify", "--jwks", p.httpURL+"/.well-known/jwks.json", "--audience", "demo-api", tok); !strings.Contains(out, "valid: signed by kid") {
		t.Errorf("verify:\n%s", out)
	}
	fail := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(signetBin, args...).CombinedOutput()
		if err == nil {
			t.Errorf("signet %s succeeded:\n%s", strings.Join(args, " "), out)
		}
		return string(out)
	}
	if out := fail(append([]string{"rotate"}, as("service")...)...); !strings.Contains(out, "PermissionDenied") {
		t.Errorf("the service rotating:\n%s", out)
	}
	if out := fail(append([]string{"sign", "--audience", "payroll", "--subject", devServiceID}, as("service")...)...); !strings.Contains(out, `audience "payroll" is not allowed`) {
		t.Errorf("the service signing for another audience:\n%s", out)
	}
	if out := runCLI(t, append([]string{"rotate"}, as("security")...)...); !strings.Contains(out, "created default version 2") {
		t.Errorf("the security team rotating:\n%s", out)
	}
	fail("keys", "--server", p.grpcAddr) // plaintext against mTLS
}
