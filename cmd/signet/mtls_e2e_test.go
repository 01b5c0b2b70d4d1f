package main

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestEndToEndMTLS follows the README's secure setup: signet dev-certs,
// serve with its certificates and policy, and the CLI with client
// certificates for a service and for the security team.
func TestEndToEndMTLS(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "certs")
	if out := runCLI(t, "dev-certs", "--dir", dir); !strings.Contains(out, "signet serve --config") {
		t.Fatalf("dev-certs printed:\n%s", out)
	}
	p := startSignetWith(t, fmt.Sprintf(`issuer: %[1]s
grpc:
  listen: 127.0.0.1:0
  tls: {cert_file: %[2]s/server.pem, key_file: %[2]s/server-key.pem, client_ca_file: %[2]s/ca.pem}
http: {listen: 127.0.0.1:0}
admin: {listen: 127.0.0.1:0}
policy_file: %[2]s/policy.yaml
audit: {path: %[2]s/audit.log}
key_rings:
  - {name: default, backend: 'local://%[3]s'}
`, testIssuer, dir, t.TempDir()))
	as := func(who string) []string {
		return []string{"--server", p.grpcAddr, "--ca", dir + "/ca.pem", "--cert", dir + "/" + who + ".pem", "--key", dir + "/" + who + "-key.pem"}
	}
	tok := strings.TrimSpace(runCLI(t, append([]string{"sign", "--audience", "demo-api", "--subject", devServiceID}, as("service")...)...))
	if out := runCLI(t, "verify", "--jwks", p.httpURL+"/.well-known/jwks.json", "--audience", "demo-api", tok); !strings.Contains(out, "valid: signed by kid") {
		t.Errorf("verify:\n%s", out)
	}
	if out := runCLIFail(t, append([]string{"rotate"}, as("service")...)...); !strings.Contains(out, "PermissionDenied") {
		t.Errorf("the service rotating:\n%s", out)
	}
	if out := runCLIFail(t, append([]string{"sign", "--audience", "payroll", "--subject", devServiceID}, as("service")...)...); !strings.Contains(out, `audience "payroll" is not allowed`) {
		t.Errorf("the service signing for another audience:\n%s", out)
	}
	if out := runCLI(t, append([]string{"rotate"}, as("security")...)...); !strings.Contains(out, "created default version 2") {
		t.Errorf("the security team rotating:\n%s", out)
	}
	runCLIFail(t, "keys", "--server", p.grpcAddr) // plaintext against mTLS

	// What happened is in the metrics: values, not only names.
	jwks, err := http.Get(p.httpURL + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	jwks.Body.Close()
	req, _ := http.NewRequest(http.MethodGet, p.httpURL+"/.well-known/jwks.json", nil)
	req.Header.Set("If-None-Match", jwks.Header.Get("ETag"))
	if r, err := http.DefaultClient.Do(req); err != nil || r.StatusCode != http.StatusNotModified {
		t.Fatalf("conditional JWKS GET: %v %v", r, err)
	}
	m := p.metrics(t)
	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"signet_tokens_issued_total", []string{"key_ring", "default"}, 1},
		{"signet_denials_total", []string{"reason", "not_granted"}, 2},
		{"signet_grpc_server_handled_total", []string{"grpc_method", "Rotate", "grpc_code", "PermissionDenied"}, 1},
		{"signet_grpc_server_handled_total", []string{"grpc_method", "Rotate", "grpc_code", "OK"}, 1},
		{"signet_key_ring_versions", []string{"key_ring", "default", "state", "pending"}, 1},
		{"signet_jwks_responses_total", []string{"code", "304"}, 1},
		{"signet_audit_write_failures_total", nil, 0},
	} {
		if got := m.Value(t, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
	if got := m.Value(t, "signet_certificate_not_after_timestamp_seconds", "certificate", "serving"); got < float64(time.Now().Unix()) {
		t.Errorf("serving certificate notAfter %v is in the past", got)
	}
	p.noSecrets(t, tok, strings.Split(tok, ".")[2])
}
