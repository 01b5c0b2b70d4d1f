package main

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	signetclient "github.com/signet-dev/signet/client"
	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
)

// testPKI is a client CA with a server certificate for 127.0.0.1, written
// as PEM files under dir.
type testPKI struct {
	dir   string
	caKey *ecdsa.PrivateKey
	ca    *x509.Certificate
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	pki := &testPKI{dir: t.TempDir()}
	var err error
	if pki.caKey, pki.ca, err = issue(nil, nil, pkix.Name{CommonName: "binding test CA"}, nil, true); err != nil {
		t.Fatal(err)
	}
	if err := writePEM(filepath.Join(pki.dir, "ca.pem"), "CERTIFICATE", pki.ca.Raw); err != nil {
		t.Fatal(err)
	}
	pki.leaf(t, "server", "", []string{"localhost"})
	return pki
}

// leaf issues a certificate (with a SPIFFE ID when id is set) and writes
// NAME.pem and NAME-key.pem.
func (pki *testPKI) leaf(t *testing.T, name, id string, dns []string) tls.Certificate {
	t.Helper()
	var uris []*url.URL
	if id != "" {
		u, err := url.Parse(id)
		if err != nil {
			t.Fatal(err)
		}
		uris = []*url.URL{u}
	}
	key, cert, err := issueLeaf(pki.caKey, pki.ca, name, uris, dns, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	if writePEM(filepath.Join(pki.dir, name+".pem"), "CERTIFICATE", cert.Raw) != nil ||
		writePEM(filepath.Join(pki.dir, name+"-key.pem"), "PRIVATE KEY", kder) != nil {
		t.Fatal("writing " + name)
	}
	return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}
}

// client is a Go client of p presenting NAME's certificate.
func (pki *testPKI) client(t *testing.T, p *process, name string) *signetclient.Client {
	t.Helper()
	c, err := signetclient.New(signetclient.Config{Target: p.grpcAddr, CAFile: filepath.Join(pki.dir, "ca.pem"),
		CertFile: filepath.Join(pki.dir, name+".pem"), KeyFile: filepath.Join(pki.dir, name+"-key.pem")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// mtlsHead is the head of a config with mTLS on pki's certificates.
func (pki *testPKI) mtlsHead(audit string) string {
	return fmt.Sprintf(`issuer: %[1]s
grpc:
  listen: 127.0.0.1:0
  tls: {cert_file: %[2]s/server.pem, key_file: %[2]s/server-key.pem, client_ca_file: %[2]s/ca.pem}
http: {listen: 127.0.0.1:0}
admin: {listen: 127.0.0.1:0}
policy_file: %[2]s/policy.yaml
audit: {path: %[3]s}
`, testIssuer, pki.dir, audit)
}

// opensslThumbprint is the x5t#S256 of a PEM certificate computed by
// OpenSSL, not by Go: its SHA-256 fingerprint (hex with colons) as
// base64url.
func opensslThumbprint(t *testing.T, pemFile string) string {
	t.Helper()
	out, err := exec.Command("openssl", "x509", "-in", pemFile, "-noout", "-fingerprint", "-sha256").Output()
	if err != nil {
		t.Fatalf("openssl x509 -fingerprint: %v", err)
	}
	_, hexSum, ok := strings.Cut(strings.TrimSpace(string(out)), "=") // "sha256 Fingerprint=AB:CD:..."
	sum, err := hex.DecodeString(strings.ReplaceAll(hexSum, ":", ""))
	if !ok || err != nil || len(sum) != 32 {
		t.Fatalf("openssl printed %q", out)
	}
	return base64.RawURLEncoding.EncodeToString(sum)
}

// payloadCnf is the token's cnf claim, decoded here from the payload.
func payloadCnf(t *testing.T, token string) map[string]any {
	t.Helper()
	parts := strings.Split(token, ".")
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		Cnf map[string]any `json:"cnf"`
	}
	if err := json.Unmarshal(raw, &claims); err != nil {
		t.Fatal(err)
	}
	return claims.Cnf
}

// TestCertificateBoundTokens runs RFC 8705 binding against the real binary
// with mTLS: a token bound to certificate A carries A's thumbprint (as
// OpenSSL computes it), still verifies with PyJWT and node jose, and passes
// the client package's middleware and interceptors only when A presents it;
// B is refused. A grant with bind: required binds tokens that did not ask;
// bind: never refuses a request that asks; the audit records the binding.
// In plaintext development mode a request for a bound token is refused with
// a reason: there is no certificate to bind it to.
func TestCertificateBoundTokens(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t)
	const idA, idB, idC = "spiffe://signet.test/svc/a", "spiffe://signet.test/svc/b", "spiffe://signet.test/svc/c"
	certA, certB := pki.leaf(t, "a", idA, nil), pki.leaf(t, "b", idB, nil)
	pki.leaf(t, "c", idC, nil)
	policy := fmt.Sprintf(`grants:
  - identity: "spiffe://signet.test/svc/*"
    sign:
      - {key_rings: [default], audiences: [e2e], subjects: [$caller]}
      - {key_rings: [strict], audiences: [e2e], subjects: [$caller], bind: required}
  - identity: %q
    sign: [{key_rings: [loose], audiences: [e2e], subjects: [$caller], bind: never}]
`, idC)
	if err := os.WriteFile(filepath.Join(pki.dir, "policy.yaml"), []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	audit := filepath.Join(t.TempDir(), "audit.log")
	data := t.TempDir()
	p := startSignetWith(t, pki.mtlsHead(audit)+fmt.Sprintf(`key_rings:
  - {name: default, backend: 'local://%[1]s'}
  - {name: strict, backend: 'local://%[1]s'}
  - {name: loose, backend: 'local://%[1]s'}
`, data))
	ctx := ctxT(t)

	a := pki.client(t, p, "a")
	tok, err := a.Sign(ctx, "default", signetclient.Audience("e2e"), signetclient.Subject(idA), signetclient.BindToCertificate())
	if err != nil {
		t.Fatal(err)
	}
	want := opensslThumbprint(t, filepath.Join(pki.dir, "a.pem"))
	cnf := payloadCnf(t, tok.Token)
	if len(cnf) != 1 || cnf["x5t#S256"] != want || tok.CertificateThumbprint != want {
		t.Fatalf("cnf %v, SignResponse thumbprint %q; OpenSSL's fingerprint of A is %q", cnf, tok.CertificateThumbprint, want)
	}
	t.Logf("bound token: cnf %v; openssl x509 -fingerprint -sha256 of A, as base64url: %s", cnf, want)
	unbound, err := a.Sign(ctx, "default", signetclient.Audience("e2e"), signetclient.Subject(idA))
	if err != nil || payloadCnf(t, unbound.Token) != nil || unbound.CertificateThumbprint != "" {
		t.Fatalf("a token that did not ask to be bound: %v, cnf %v", err, payloadCnf(t, unbound.Token))
	}
	// Verifiers that know nothing of cnf still verify the signature.
	for verifier, results := range externalVerify(t, p, tok.Token) {
		if r := results[0]; !r.OK || fmt.Sprint(r.Claims["cnf"]) != fmt.Sprint(cnf) {
			t.Errorf("%s on the bound token: %+v", verifier, r)
		}
	}

	// A grant that requires binding binds a token that did not ask.
	strict, err := pki.client(t, p, "b").Sign(ctx, "strict", signetclient.Audience("e2e"), signetclient.Subject(idB))
	if err != nil || payloadCnf(t, strict.Token)["x5t#S256"] != opensslThumbprint(t, filepath.Join(pki.dir, "b.pem")) {
		t.Errorf("bind: required, not asked: %v, cnf %v", err, payloadCnf(t, strict.Token))
	}
	// bind: never refuses a request that asks, saying so.
	_, err = pki.client(t, p, "c").Sign(ctx, "loose", signetclient.Audience("e2e"), signetclient.Subject(idC), signetclient.BindToCertificate())
	if e, ok := signetclient.ErrorOf(err); !ok || e.Code != codes.PermissionDenied || e.Reason != signetv1.ErrorReason_BINDING_NOT_ALLOWED {
		t.Errorf("bind: never, asked: %v, want PermissionDenied BINDING_NOT_ALLOWED", err)
	}
	// The CLI asks with --bind; signet verify says whom the token is bound to.
	cliTok := strings.TrimSpace(runCLI(t, "sign", "--server", p.grpcAddr, "--ca", pki.dir+"/ca.pem", "--cert", pki.dir+"/a.pem",
		"--key", pki.dir+"/a-key.pem", "--audience", "e2e", "--subject", idA, "--bind"))
	if out := runCLI(t, "verify", "--jwks", p.httpURL+"/.well-known/jwks.json", cliTok); !strings.Contains(out, "bound to the client certificate with x5t#S256 "+want) {
		t.Errorf("signet verify of a bound token:\n%s", out)
	}
	var boundLines int
	for _, rec := range auditRecords(t, audit) {
		if rec["rpc"] == "Sign" && rec["outcome"] == "ok" && rec["cnf_x5t_s256"] != nil {
			boundLines++
		}
	}
	if boundLines != 3 {
		t.Errorf("%d audit lines of bound tokens, want 3", boundLines)
	}

	// A service behind the client package's middleware and interceptors,
	// with mutual TLS: the bound token passes only with A's certificate.
	v := p.verifier(t, signetclient.VerifierConfig{Audience: "e2e"})
	server := pki.leaf(t, "resource-server", "", []string{"localhost"})
	roots := x509.NewCertPool()
	roots.AddCert(pki.ca)
	serverTLS := &tls.Config{Certificates: []tls.Certificate{server}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: roots,
		MinVersion: tls.VersionTLS13}
	web := httptest.NewUnstartedServer(v.Middleware(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})))
	web.TLS = serverTLS
	web.StartTLS()
	defer web.Close()
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(serverTLS)), grpc.ChainUnaryInterceptor(v.UnaryServerInterceptor()))
	healthpb.RegisterHealthServer(gs, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()
	for _, c := range []struct {
		name   string
		token  string
		cert   tls.Certificate
		ok     bool
		status int
	}{
		{"bound to A, presented by A", tok.Token, certA, true, http.StatusOK},
		{"bound to A, presented by B", tok.Token, certB, false, http.StatusUnauthorized},
		{"unbound, presented by B", unbound.Token, certB, true, http.StatusOK},
	} {
		conf := &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{c.cert}, MinVersion: tls.VersionTLS13}
		req, _ := http.NewRequest(http.MethodGet, web.URL, nil)
		req.Header.Set("Authorization", "Bearer "+c.token)
		resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: conf}}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(conf)))
		if err != nil {
			t.Fatal(err)
		}
		_, gerr := healthpb.NewHealthClient(conn).Check(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.token),
			&healthpb.HealthCheckRequest{})
		conn.Close()
		wantCode := codes.OK
		if !c.ok {
			wantCode = codes.Unauthenticated
		}
		t.Logf("%s: middleware %d, interceptor %v", c.name, resp.StatusCode, status.Code(gerr))
		if resp.StatusCode != c.status || status.Code(gerr) != wantCode {
			t.Errorf("%s: middleware %d (want %d), interceptor %v (want %v)", c.name, resp.StatusCode, c.status, gerr, wantCode)
		}
	}

	// Plaintext development mode has no certificate to bind to.
	dev := startSignetWith(t, clientConfig(t.TempDir()))
	_, err = goClient(t, dev).Sign(ctx, "default", signetclient.Audience("e2e"), signetclient.BindToCertificate())
	e, ok := signetclient.ErrorOf(err)
	if !ok || e.Code != codes.FailedPrecondition || e.Reason != signetv1.ErrorReason_CERTIFICATE_BINDING_UNAVAILABLE ||
		!strings.Contains(e.Message, "no client certificate") {
		t.Errorf("a bound token in plaintext development mode: %v, want FailedPrecondition CERTIFICATE_BINDING_UNAVAILABLE", err)
	}
}
