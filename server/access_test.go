package server

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/signet-dev/signet/backends"
	signetclient "github.com/signet-dev/signet/client"
	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
	"github.com/signet-dev/signet/internal/clocktest"
	"github.com/signet-dev/signet/server/config"
)

const (
	serviceID  = "spiffe://corp.test/ns/payments/sa/api"
	securityID = "spiffe://corp.test/team/security"
)

// testCA issues certificates for the mTLS tests.
type testCA struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
}

func newTestCA(t *testing.T) *testCA {
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

// issue writes a leaf certificate and key to dir/name.pem and dir/name-key.pem.
func (ca *testCA) issue(t *testing.T, dir, name, uri string, ips ...net.IP) (certFile, keyFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: name}, IPAddresses: ips,
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
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
	writeAtomic(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	writeAtomic(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
	return certFile, keyFile
}

func (ca *testCA) writeCert(t *testing.T, path string) {
	writeAtomic(t, path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}))
}

// writeAtomic replaces a file the way deployment tools do: write, then rename.
func writeAtomic(t *testing.T, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

const testGrants = `
grants:
  - identity: "spiffe://corp.test/ns/payments/**"
    sign:
      - key_rings: [default]
        audiences: ["ledger", "payments-*"]
        subjects: ["$caller", "batch-*"]
        claims: [scope]
        max_ttl: 10m
        typ: [JWT, at+jwt]
        rate: {per_second: 0.5, burst: 3}
    list: [default]
  - identity: "spiffe://corp.test/team/security"
    rotate: ["*"]
    list: ["*"]
`

type mtlsEnv struct {
	ts                    *testServer
	dir, policy, caFile   string
	ca                    *testCA
	serverCert, serverKey string
	auditPath             string
	clock                 *clocktest.Clock
}

func startMTLS(t *testing.T, audit string, tweak ...func(*config.Config)) *mtlsEnv {
	t.Helper()
	e := &mtlsEnv{dir: t.TempDir(), ca: newTestCA(t), clock: clocktest.New()}
	e.caFile = filepath.Join(e.dir, "ca.pem")
	e.ca.writeCert(t, e.caFile)
	e.serverCert, e.serverKey = e.ca.issue(t, e.dir, "server", "", net.IPv4(127, 0, 0, 1))
	e.policy = filepath.Join(e.dir, "policy.yaml")
	writeAtomic(t, e.policy, []byte(testGrants))
	cfg := testConfig(t, backends.ES256, backends.EdDSA)
	cfg.GRPC.TLS.CertFile, cfg.GRPC.TLS.KeyFile, cfg.GRPC.TLS.ClientCAFile = e.serverCert, e.serverKey, e.caFile
	cfg.PolicyFile = e.policy
	e.auditPath = audit
	if audit == "" {
		e.auditPath = filepath.Join(e.dir, "audit.log")
	}
	cfg.Audit.Path = e.auditPath
	for _, f := range tweak {
		f(&cfg)
	}
	e.ts = startServerNoDial(t, cfg, Options{Now: e.clock.Now})
	return e
}

// client dials with a client certificate issued by ca (nil: none).
func (e *mtlsEnv) client(t *testing.T, ca *testCA, id string) signetv1.SignerServiceClient {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(e.ca.cert)
	conf := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool}
	if ca != nil {
		cf, kf := ca.issue(t, t.TempDir(), "client", id)
		pair, err := tls.LoadX509KeyPair(cf, kf)
		if err != nil {
			t.Fatal(err)
		}
		conf.Certificates = []tls.Certificate{pair}
	}
	conn, err := grpc.NewClient(e.ts.grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(conf)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return signetv1.NewSignerServiceClient(conn)
}

func (e *mtlsEnv) auditLines(t *testing.T) []map[string]any {
	t.Helper()
	f, err := os.Open(e.auditPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("audit line is not JSON: %s", sc.Text())
		}
		out = append(out, m)
	}
	return out
}

func codeOf(err error) codes.Code { return status.Code(err) }

func TestMTLSAuthenticationAndPolicy(t *testing.T) {
	t.Parallel()
	e := startMTLS(t, "")
	svc := e.client(t, e.ca, serviceID)
	sec := e.client(t, e.ca, securityID)
	ctx := ctxT(t)
	good := func() *signetv1.SignRequest {
		return &signetv1.SignRequest{KeyRing: "default", Subject: serviceID, Audience: []string{"payments-api"},
			Ttl: durationpb.New(5 * time.Minute)}
	}

	if _, err := e.client(t, nil, "").Sign(ctx, good()); codeOf(err) != codes.Unauthenticated {
		t.Errorf("no client certificate: %v", err)
	}
	if _, err := e.client(t, newTestCA(t), serviceID).Sign(ctx, good()); codeOf(err) != codes.Unauthenticated ||
		!strings.Contains(err.Error(), "not signed by a trusted CA") {
		t.Errorf("certificate from another CA: %v", err)
	}
	resp, err := svc.Sign(ctx, good())
	if err != nil {
		t.Fatalf("the service signing within its grant: %v", err)
	}
	denied := []struct {
		name string
		req  func(*signetv1.SignRequest)
		want string
	}{
		{"other audience", func(r *signetv1.SignRequest) { r.Audience = []string{"hr"} }, `audience "hr" is not allowed`},
		{"other ring", func(r *signetv1.SignRequest) { r.KeyRing = "ring-eddsa" }, `no grant lets "` + serviceID + `" sign with key ring "ring-eddsa"`},
		{"longer ttl", func(r *signetv1.SignRequest) { r.Ttl = durationpb.New(30 * time.Minute) }, "exceeds the grant's max_ttl 10m0s"},
		{"forbidden claim", func(r *signetv1.SignRequest) {
			r.Claims, _ = structpb.NewStruct(map[string]any{"admin": true})
		}, `custom claim "admin" is not allowed`},
		{"someone else's subject", func(r *signetv1.SignRequest) { r.Subject = "root" }, `subject "root" is not allowed`},
		{"a typ not granted", func(r *signetv1.SignRequest) { r.Typ = "logout+jwt" }, `typ "logout+jwt" is not allowed`},
	}
	for _, d := range denied {
		req := good()
		d.req(req)
		if _, err := svc.Sign(ctx, req); codeOf(err) != codes.PermissionDenied || !strings.Contains(err.Error(), d.want) {
			t.Errorf("%s: %v, want PermissionDenied saying %q", d.name, err, d.want)
		}
	}
	allowedClaims := good()
	allowedClaims.Subject = "batch-7"
	allowedClaims.Claims, _ = structpb.NewStruct(map[string]any{"scope": "read"})
	if _, err := svc.Sign(ctx, allowedClaims); codeOf(err) != codes.OK && codeOf(err) != codes.ResourceExhausted {
		t.Errorf("a glob subject and an allowed claim: %v", err)
	}
	// A granted typ ends up in the header; a request without ttl gets the grant's max_ttl.
	at := good()
	at.Typ, at.Ttl = "at+jwt", nil
	if r, err := svc.Sign(ctx, at); err != nil {
		t.Errorf("a granted typ: %v", err)
	} else {
		hdr, _ := base64.RawURLEncoding.DecodeString(strings.Split(r.GetToken(), ".")[0])
		if !strings.Contains(string(hdr), `"typ":"at+jwt"`) {
			t.Errorf("header %s", hdr)
		}
		if life := time.Until(r.GetExpiresAt().AsTime()); life > 10*time.Minute || life < 9*time.Minute {
			t.Errorf("a token without ttl lives %v, want the grant's max_ttl of 10m", life)
		}
	}
	if _, err := svc.Rotate(ctx, &signetv1.RotateRequest{KeyRing: "default"}); codeOf(err) != codes.PermissionDenied {
		t.Errorf("the service rotating: %v", err)
	}
	rot, err := sec.Rotate(ctx, &signetv1.RotateRequest{KeyRing: "default"})
	if err != nil {
		t.Fatalf("the security team rotating: %v", err)
	}
	if _, err := sec.Sign(ctx, good()); codeOf(err) != codes.PermissionDenied {
		t.Errorf("the security team signing: %v", err)
	}
	// ListKeys shows only rings the caller may list.
	lk, err := svc.ListKeys(ctx, &signetv1.ListKeysRequest{})
	for _, v := range lk.GetVersions() {
		if v.GetKeyRing() != "default" {
			t.Errorf("the service sees ring %s", v.GetKeyRing())
		}
	}
	if err != nil {
		t.Error(err)
	}

	// The audit log: complete lines, never the token.
	lines := e.auditLines(t)
	raw, _ := os.ReadFile(e.auditPath)
	if strings.Contains(string(raw), resp.GetToken()) || strings.Contains(string(raw), strings.Split(resp.GetToken(), ".")[2]) {
		t.Fatal("the audit log holds a token")
	}
	var signOK, deniedN, rotated int
	for _, l := range lines {
		switch {
		case l["rpc"] == "Sign" && l["outcome"] == "ok":
			signOK++
			if l["jti"] == resp.GetJti() {
				for _, k := range []string{"time", "caller", "peer", "key_ring", "kid", "sub", "aud", "exp"} {
					if l[k] == nil || l[k] == "" {
						t.Errorf("audit line lacks %s: %v", k, l)
					}
				}
				if l["caller"] != serviceID || l["kid"] != resp.GetKid() {
					t.Errorf("audit line %v", l)
				}
			}
		case l["outcome"] == "denied":
			deniedN++
			if l["reason"] == "" {
				t.Errorf("denied without a reason: %v", l)
			}
		case l["rpc"] == "Rotate" && l["outcome"] == "ok":
			rotated++
			if l["kid"] != rot.GetVersion().GetKid() || l["caller"] != securityID {
				t.Errorf("rotate audit line %v", l)
			}
		}
		if c, ok := l["claims_sha256"]; ok && len(c.(string)) != 64 {
			t.Errorf("claims hash %v", c)
		}
	}
	if signOK < 2 || deniedN < 10 || rotated != 1 {
		t.Errorf("audit: %d signs, %d denials, %d rotations", signOK, deniedN, rotated)
	}
	if strings.Contains(string(raw), `"read"`) {
		t.Error("the audit log holds a claim value")
	}
}

func TestRateLimitPerCaller(t *testing.T) {
	t.Parallel()
	e := startMTLS(t, "")
	svc := e.client(t, e.ca, serviceID)
	req := &signetv1.SignRequest{KeyRing: "default", Subject: serviceID, Audience: []string{"ledger"}}
	var limited error
	for range 10 { // burst 3, 0.5/s: the fourth in quick succession is refused
		if _, err := svc.Sign(ctxT(t), req); err != nil {
			limited = err
			break
		}
	}
	if codeOf(limited) != codes.ResourceExhausted {
		t.Fatalf("over the rate: %v", limited)
	}
	m := scrape(t, e.ts)
	if got := m.Value(t, "signet_rate_limited_total", "grant", "spiffe://corp.test/ns/payments/**"); got != 1 {
		t.Errorf("rate-limited requests counted for the grant: %v, want 1", got)
	}
	if got := m.Value(t, "signet_denials_total", "reason", "rate_limited"); got != 1 {
		t.Errorf("rate_limited denials: %v, want 1", got)
	}
	// Another identity of the same grant has its own bucket.
	other := e.client(t, e.ca, "spiffe://corp.test/ns/payments/sa/worker")
	if _, err := other.Sign(ctxT(t), &signetv1.SignRequest{KeyRing: "default", Subject: "batch-1", Audience: []string{"ledger"}}); err != nil {
		t.Errorf("another caller: %v", err)
	}
	// The bucket refills: a token every 2s.
	e.clock.Advance(1900 * time.Millisecond)
	if _, err := svc.Sign(ctxT(t), req); codeOf(err) != codes.ResourceExhausted {
		t.Fatalf("before the bucket refilled: %v", err)
	}
	e.clock.Advance(100 * time.Millisecond)
	if _, err := svc.Sign(ctxT(t), req); err != nil {
		t.Fatalf("still limited after the refill: %v", err)
	}
}

func TestPolicyAndCertificateReload(t *testing.T) {
	t.Parallel()
	e := startMTLS(t, "")
	svc := e.client(t, e.ca, serviceID)
	req := &signetv1.SignRequest{KeyRing: "default", Subject: serviceID, Audience: []string{"hr"}}
	if _, err := svc.Sign(ctxT(t), req); codeOf(err) != codes.PermissionDenied {
		t.Fatalf("before reload: %v", err)
	}
	writeAtomic(t, e.policy, []byte(strings.Replace(testGrants, `audiences: ["ledger", "payments-*"]`, `audiences: ["ledger", "payments-*", "hr"]`, 1)))
	e.ts.authz.Reload() // what the watcher does every second
	if _, err := svc.Sign(ctxT(t), req); err != nil {
		t.Fatalf("after the policy file changed: %v", err)
	}

	// A broken policy is refused; the one in force stays.
	writeAtomic(t, e.policy, []byte("grants: [{identity: ''}]\n"))
	e.ts.authz.Reload()
	if _, err := svc.Sign(ctxT(t), req); err != nil {
		t.Errorf("a broken policy file replaced the policy in force: %v", err)
	}

	// A new client CA: certificates from the old one stop working, the new one's start.
	newCA := newTestCA(t)
	newCA.writeCert(t, e.caFile)
	e.ts.authz.Reload()
	fromNew := e.client(t, newCA, serviceID)
	if _, err := fromNew.Sign(ctxT(t), req); err != nil {
		t.Fatalf("a certificate of the new client CA: %v", err)
	}
	if _, err := e.client(t, e.ca, serviceID).Sign(ctxT(t), req); codeOf(err) != codes.Unauthenticated {
		t.Errorf("a certificate of the replaced CA: %v", err)
	}
	m := scrape(t, e.ts)
	for _, c := range []struct {
		file, outcome string
		want          float64
	}{{"policy", "ok", 1}, {"policy", "error", 1}, {"certificates", "ok", 1}} {
		if got := m.Value(t, "signet_reloads_total", "file", c.file, "outcome", c.outcome); got != c.want {
			t.Errorf("reloads of %s with outcome %s: %v, want %v", c.file, c.outcome, got, c.want)
		}
	}
	if got := m.Value(t, "signet_certificate_not_after_timestamp_seconds", "certificate", "client_ca"); got != float64(newCA.cert.NotAfter.Unix()) {
		t.Errorf("client CA notAfter %v, want the new CA's %v", got, newCA.cert.NotAfter.Unix())
	}
}

func TestAuditUnwritableFailsClosed(t *testing.T) {
	t.Parallel()
	e := startMTLS(t, "/dev/full") // every write fails with ENOSPC
	svc := e.client(t, e.ca, serviceID)
	sec := e.client(t, e.ca, securityID)
	_, err := svc.Sign(ctxT(t), &signetv1.SignRequest{KeyRing: "default", Subject: serviceID, Audience: []string{"ledger"}})
	if codeOf(err) != codes.Unavailable || !strings.Contains(err.Error(), "audit log cannot be written") {
		t.Errorf("Sign with the audit log unwritable: %v", err)
	}
	if e, _ := signetclient.ErrorOf(err); e == nil || e.Reason != signetv1.ErrorReason_AUDIT_UNAVAILABLE || e.RetryDelay != unavailableRetryDelay {
		t.Errorf("error details %+v, want AUDIT_UNAVAILABLE with RetryInfo", e)
	}
	if got := scrape(t, e.ts).Value(t, "signet_audit_write_failures_total"); got != 1 {
		t.Errorf("audit write failures counted: %v, want 1", got)
	}
	before := len(e.ts.KeySet().Versions(e.ts.KeySet().Ring("default")))
	_, err = sec.Rotate(ctxT(t), &signetv1.RotateRequest{KeyRing: "default"})
	if codeOf(err) != codes.Unavailable {
		t.Errorf("Rotate with the audit log unwritable: %v", err)
	}
	if after := len(e.ts.KeySet().Versions(e.ts.KeySet().Ring("default"))); after != before {
		t.Errorf("Rotate changed the key ring (%d -> %d versions) without an audit record", before, after)
	}
	// Rotations the audit outage stopped created nothing, so they cost no
	// token of limits.rotate (burst 3): retrying through the outage is
	// never rate-limited.
	for range 3 {
		_, _ = sec.Rotate(ctxT(t), &signetv1.RotateRequest{KeyRing: "default"})
	}
	if m := scrape(t, e.ts); m["signet_rate_limited_total"] != nil { // no series until one is limited
		t.Errorf("rotations stopped by the audit outage were rate-limited (%v): they spent tokens",
			m.Value(t, "signet_rate_limited_total", "grant", securityID))
	}
}
