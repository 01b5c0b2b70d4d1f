package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"

	"github.com/signet-dev/signet/backends"
	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
	"github.com/signet-dev/signet/server/config"
	"github.com/signet-dev/signet/server/keystate"
)

const peerID = "spiffe://corp.test/ns/signet/sa/signet"

// peerEnv is a CA and a replica serving PeerService, its server
// certificate naming serverID.
type peerEnv struct {
	ca             *testCA
	dir, caFile    string
	cfg            config.Config
	ts             *testServer
	rootsForClient *x509.CertPool
}

func startPeer(t *testing.T, ca *testCA, serverID string) *peerEnv {
	t.Helper()
	e := &peerEnv{ca: ca, dir: t.TempDir()}
	e.caFile = filepath.Join(e.dir, "ca.pem")
	ca.writeCert(t, e.caFile)
	cert, key := ca.issue(t, e.dir, "server", serverID, net.IPv4(127, 0, 0, 1))
	policy := filepath.Join(e.dir, "policy.yaml")
	writeAtomic(t, policy, []byte(testGrants))
	e.cfg = testConfig(t, backends.ES256, backends.EdDSA)
	e.cfg.GRPC.TLS.CertFile, e.cfg.GRPC.TLS.KeyFile, e.cfg.GRPC.TLS.ClientCAFile = cert, key, e.caFile
	e.cfg.PolicyFile = policy
	e.cfg.Peers.Identities = []string{peerID}
	e.ts = startServerNoDial(t, e.cfg, Options{})
	e.rootsForClient = x509.NewCertPool()
	e.rootsForClient.AddCert(ca.cert)
	return e
}

// ask calls GetKeySetSnapshot presenting a certificate for id issued by
// ca (nil: none).
func (e *peerEnv) ask(t *testing.T, ca *testCA, id string) (*signetv1.GetKeySetSnapshotResponse, error) {
	t.Helper()
	conf := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: e.rootsForClient}
	if ca != nil {
		cf, kf := ca.issue(t, t.TempDir(), "caller", id)
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
	defer conn.Close()
	return signetv1.NewPeerServiceClient(conn).GetKeySetSnapshot(ctxT(t), &signetv1.GetKeySetSnapshotRequest{})
}

// PeerService answers peers only: a caller without a certificate, with one
// another CA issued, or with an identity that is not a peer's, is refused
// before anything of the key set is sent.
func TestPeerServiceAnswersPeersOnly(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t)
	e := startPeer(t, ca, peerID)
	for _, c := range []struct {
		name string
		ca   *testCA
		id   string
		want codes.Code
	}{
		{"no certificate", nil, "", codes.Unauthenticated},
		{"another CA", newTestCA(t), peerID, codes.Unauthenticated},
		{"not a peer", ca, serviceID, codes.PermissionDenied},
		{"a peer's identity in another trust domain", ca, "spiffe://evil.test/ns/signet/sa/signet", codes.PermissionDenied},
	} {
		resp, err := e.ask(t, c.ca, c.id)
		if codeOf(err) != c.want || len(resp.GetSnapshot()) != 0 {
			t.Errorf("%s: %v (%d bytes), want %v", c.name, err, len(resp.GetSnapshot()), c.want)
		}
	}
	resp, err := e.ask(t, ca, peerID)
	if err != nil {
		t.Fatalf("a peer: %v", err)
	}
	rings, err := keystate.Decode(resp.GetSnapshot())
	if err != nil || len(rings) != 2 {
		t.Fatalf("snapshot: %d rings, %v", len(rings), err)
	}
	for _, r := range rings {
		if r.Backend != keystate.BackendID(e.cfg.KeyRings[0].Backend) || len(r.Versions) != 1 {
			t.Errorf("ring %s: backend %s, %d versions", r.Name, r.Backend, len(r.Versions))
		}
	}
	// Published kids are those of the snapshot.
	want := map[string]bool{}
	for _, v := range e.ts.KeySet().Published() {
		want[v.Kid] = true
	}
	for _, r := range rings {
		kid, _ := backends.KeyID(r.Versions[0].PublicKey)
		if !want[kid] {
			t.Errorf("ring %s: kid %s is not published", r.Name, kid)
		}
	}
}

// The asking side trusts a peer only if its server certificate verifies
// against the peer CA and names a peer's identity; it presents its own.
func TestPeerFetchChecksTheServer(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t)
	good := startPeer(t, ca, peerID)
	impostor := startPeer(t, ca, "spiffe://corp.test/ns/payments/sa/api") // same CA, not a peer
	foreign := startPeer(t, newTestCA(t), peerID)                         // a peer's name from another CA
	dir := t.TempDir()
	cert, key := ca.issue(t, dir, "replica", peerID, net.IPv4(127, 0, 0, 1))
	fetch := func(addr string) ([]peerRings, error) {
		cfg := good.cfg
		cfg.GRPC.TLS.CertFile, cfg.GRPC.TLS.KeyFile = cert, key
		cfg.Peers.Addresses, cfg.Peers.Timeout = []string{addr}, config.Duration(10*time.Second)
		k, err := newKeyState(cfg, testLogger(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		return k.fetchPeers(ctx)
	}
	if got, err := fetch(good.ts.grpcAddr); err != nil || len(got) != 1 || !strings.Contains(got[0].source, peerID) {
		t.Fatalf("a peer: %v, %v", got, err)
	}
	if got, err := fetch(impostor.ts.grpcAddr); err == nil || !strings.Contains(err.Error(), "not one of peers.identities") {
		t.Errorf("a server that is not a peer: %v, %v", got, err)
	}
	if got, err := fetch(foreign.ts.grpcAddr); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Errorf("a server another CA vouches for: %v, %v", got, err)
	}
}

// Peers need mTLS: in plaintext development mode there is nothing to
// authenticate a peer by, and the config says so.
func TestPeersNeedMTLS(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.Peers.Addresses = []string{"127.0.0.1:9443"}
	cfg.Peers.Identities = []string{peerID}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "peers needs grpc.tls") {
		t.Errorf("Validate: %v", err)
	}
}
