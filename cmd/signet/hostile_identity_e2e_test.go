package main

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	signetclient "github.com/signet-dev/signet/client"
	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
)

// TestHostileIdentities attacks the real binary, with mTLS and a policy, the
// way a holder of some certificate from the client CA would:
//
//   - a certificate with no URI SAN whose DNS SAN spells the security team's
//     SPIFFE ID gets none of its grants: its Rotate is denied, and the audit
//     names it dns:spiffe://..., never the SPIFFE ID;
//   - a certificate with two URI SANs is refused, saying why;
//   - a ListKeys the policy refuses is audited;
//   - a rotate grant in a loop runs into limits.rotate;
//   - ListKeys pages across three rings for every page size, with and
//     without a state filter, each version exactly once.
func TestHostileIdentities(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	caKey, ca, err := issue(nil, nil, pkix.Name{CommonName: "hostile test CA"}, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := writePEM(filepath.Join(dir, "ca.pem"), "CERTIFICATE", ca.Raw); err != nil {
		t.Fatal(err)
	}
	serverKey, serverCert, err := issueLeaf(caKey, ca, "server", nil, []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(serverKey)
	if writePEM(filepath.Join(dir, "server.pem"), "CERTIFICATE", serverCert.Raw) != nil ||
		writePEM(filepath.Join(dir, "server-key.pem"), "PRIVATE KEY", kder) != nil {
		t.Fatal("writing the server certificate")
	}
	policy := fmt.Sprintf(`grants:
  - identity: %q
    rotate: ["*"]
    list: ["*"]
  - identity: %q
    sign: [{key_rings: [default], audiences: [demo-api], subjects: [$caller]}]
limits:
  rotate: {every: 1h, burst: 2}
`, devSecurityID, devServiceID)
	if err := os.WriteFile(filepath.Join(dir, "policy.yaml"), []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	audit := filepath.Join(dir, "audit.log")
	p := startSignetWith(t, fmt.Sprintf(`issuer: %[1]s
grpc:
  listen: 127.0.0.1:0
  tls: {cert_file: %[2]s/server.pem, key_file: %[2]s/server-key.pem, client_ca_file: %[2]s/ca.pem}
http: {listen: 127.0.0.1:0}
admin: {listen: 127.0.0.1:0}
policy_file: %[2]s/policy.yaml
audit: {path: %[4]s}
key_rings:
  - {name: default, backend: 'local://%[3]s'}
  - {name: second, backend: 'local://%[3]s', algorithm: EdDSA}
  - {name: third, backend: 'local://%[3]s', algorithm: ES384}
`, testIssuer, dir, data, audit))

	// client dials with a fresh certificate from the client CA.
	client := func(uris []string, dns []string) signetv1.SignerServiceClient {
		t.Helper()
		var us []*url.URL
		for _, s := range uris {
			u, err := url.Parse(s)
			if err != nil {
				t.Fatal(err)
			}
			us = append(us, u)
		}
		key, cert, err := issueLeaf(caKey, ca, "client", us, dns, nil)
		if err != nil {
			t.Fatal(err)
		}
		return dialMTLS(t, p.grpcAddr, ca, cert, key)
	}
	ctx := ctxT(t)
	versions := func() int {
		t.Helper()
		resp, err := client([]string{devSecurityID}, nil).ListKeys(ctx, &signetv1.ListKeysRequest{KeyRing: "default"})
		if err != nil {
			t.Fatal(err)
		}
		return len(resp.GetVersions())
	}
	before := versions()

	// The DNS SAN that spells the security team's SPIFFE ID.
	impostor := client(nil, []string{devSecurityID})
	_, err = impostor.Rotate(ctx, &signetv1.RotateRequest{KeyRing: "default"})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), `"dns:`+devSecurityID+`"`) {
		t.Errorf("Rotate by a certificate whose DNS SAN spells %s: %v; want PermissionDenied naming the dns: identity", devSecurityID, err)
	}
	// Two URI SANs: one of them the security team's.
	_, err = client([]string{devSecurityID, devServiceID}, nil).Rotate(ctx, &signetv1.RotateRequest{KeyRing: "default"})
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "has 2 URI SANs: an X.509-SVID has exactly one") {
		t.Errorf("Rotate by a certificate with two URI SANs: %v; want Unauthenticated saying why", err)
	}
	if after := versions(); after != before {
		t.Fatalf("the refused rotations created versions: %d -> %d", before, after)
	}
	// A SPIFFE ID in another case is another identity; one with a query,
	// a dot segment or a trailing slash is no SPIFFE ID at all.
	for id, want := range map[string]codes.Code{
		"spiffe://signet.dev/team/Security":      codes.PermissionDenied,
		"spiffe://signet.dev/team/security/":     codes.Unauthenticated,
		"spiffe://signet.dev/team/security?x=1":  codes.Unauthenticated,
		"spiffe://signet.dev/team/x/../security": codes.Unauthenticated,
	} {
		_, err := client([]string{id}, nil).Rotate(ctx, &signetv1.RotateRequest{KeyRing: "default"})
		if status.Code(err) != want {
			t.Errorf("Rotate as %s: %v; want %v", id, err, want)
		}
	}
	// A caller without a list grant.
	service := client([]string{devServiceID}, nil)
	if _, err := service.ListKeys(ctx, &signetv1.ListKeysRequest{}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("ListKeys without a list grant: %v", err)
	}

	// The real security team: two rotations, then the limit.
	security := client([]string{devSecurityID}, nil)
	for range 2 {
		if _, err := security.Rotate(ctx, &signetv1.RotateRequest{KeyRing: "default"}); err != nil {
			t.Fatalf("the security team rotating: %v", err)
		}
	}
	_, err = security.Rotate(ctx, &signetv1.RotateRequest{KeyRing: "default"})
	if info, _ := signetclient.ErrorOf(err); status.Code(err) != codes.ResourceExhausted || info == nil ||
		info.Reason != signetv1.ErrorReason_RATE_LIMITED || info.RetryDelay <= 0 || info.RetryDelay > time.Hour {
		t.Errorf("a third rotation within the hour: %v (%+v); want RATE_LIMITED with RetryInfo", err, info)
	}
	if _, err := security.Rotate(ctx, &signetv1.RotateRequest{KeyRing: "third"}); err != nil {
		t.Errorf("rotating another ring (its own bucket): %v", err)
	}

	// Paging across the three rings (3, 1 and 2 versions).
	pageAcrossRings(t, security)

	// What the audit log says.
	lines := auditRecords(t, audit)
	has := func(rpc, caller, outcome, reason string) bool {
		return slices.ContainsFunc(lines, func(l map[string]any) bool {
			return l["rpc"] == rpc && l["caller"] == caller && l["outcome"] == outcome &&
				strings.Contains(fmt.Sprint(l["reason"]), reason)
		})
	}
	if !has("Rotate", "dns:"+devSecurityID, "denied", "no grant") {
		t.Errorf("no audit line names the impostor as the DNS identity dns:%s", devSecurityID)
	}
	for _, l := range lines {
		if l["caller"] == devSecurityID && l["outcome"] == "denied" && !strings.Contains(fmt.Sprint(l["reason"]), "rate limit") {
			t.Errorf("an audit line names %s for a refusal it did not cause: %v", devSecurityID, l)
		}
	}
	if !has("ListKeys", devServiceID, "denied", "no grant lets") {
		t.Error("the denied ListKeys is not in the audit log")
	}
	if !has("Rotate", devSecurityID, "denied", "rate limit") {
		t.Error("the rate-limited Rotate is not in the audit log")
	}
}

// pageAcrossRings pages every ring the client may list with page sizes 1
// to one past the total, unfiltered and by state, and compares with one
// unpaged listing.
func pageAcrossRings(t *testing.T, c signetv1.SignerServiceClient) {
	t.Helper()
	ctx := ctxT(t)
	for _, states := range [][]signetv1.KeyState{nil, {signetv1.KeyState_KEY_STATE_PENDING}, {signetv1.KeyState_KEY_STATE_ACTIVE}} {
		all, err := c.ListKeys(ctx, &signetv1.ListKeysRequest{States: states})
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		rings := map[string]bool{}
		for _, v := range all.GetVersions() {
			want = append(want, v.GetKeyRing()+"/"+v.GetKid())
			rings[v.GetKeyRing()] = true
		}
		if states == nil && (len(want) != 6 || len(rings) != 3) {
			t.Fatalf("unpaged listing: %v; want 6 versions in 3 rings", want)
		}
		for size := 1; size <= len(want)+1; size++ {
			var got []string
			req := &signetv1.ListKeysRequest{States: states, PageSize: int32(size)}
			for page := 0; page <= len(want)+1; page++ {
				resp, err := c.ListKeys(ctx, req)
				if err != nil {
					t.Fatalf("states %v, page size %d, page %d: %v", states, size, page, err)
				}
				for _, v := range resp.GetVersions() {
					got = append(got, v.GetKeyRing()+"/"+v.GetKid())
				}
				if req.PageToken = resp.GetNextPageToken(); req.PageToken == "" {
					break
				}
			}
			if !slices.Equal(got, want) {
				t.Errorf("states %v, page size %d:\n got %v\nwant %v", states, size, got, want)
			}
		}
	}
}

// dialMTLS connects to addr with a client certificate, trusting ca.
func dialMTLS(t *testing.T, addr string, ca, cert *x509.Certificate, key *ecdsa.PrivateKey) signetv1.SignerServiceClient {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	conf := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: pool,
		Certificates: []tls.Certificate{{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}}}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(conf)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return signetv1.NewSignerServiceClient(conn)
}
