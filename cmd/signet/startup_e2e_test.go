package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	signetclient "github.com/signet-dev/signet/client"
	"github.com/signet-dev/signet/internal/kmstest"
	"github.com/signet-dev/signet/internal/vaulttest"
)

// peerID is the identity every replica's certificate names in these tests,
// as one Kubernetes service account's SPIFFE ID would.
const peerID = "spiffe://signet.test/ns/signet/sa/signet"

// clientID is the identity of the tests' caller.
const clientID = "spiffe://signet.test/client"

// fleet is replicas of one deployment on fixed loopback ports, so that
// each can name the others as peers and a restart keeps its addresses.
type fleet struct {
	pki     *testPKI
	backend string
	env     []string
	grpc    []int // per replica slot
	http    []int
	states  []string // state_dir per slot
	procs   []*process
}

// freePort is a loopback port that nothing listens on now.
func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func newFleet(t *testing.T, slots int, backend string, env ...string) *fleet {
	t.Helper()
	f := &fleet{pki: newTestPKI(t), backend: backend, env: env, procs: make([]*process, slots)}
	f.pki.leaf(t, "replica", peerID, []string{"localhost"})
	f.pki.leaf(t, "client", clientID, nil)
	policy := "grants:\n  - identity: " + clientID + "\n    sign: [{key_rings: [default, eddsa], audiences: [e2e], subjects: [$caller]}]\n"
	if err := os.WriteFile(filepath.Join(f.pki.dir, "policy.yaml"), []byte(policy), 0o600); err != nil {
		t.Fatal(err)
	}
	for range slots {
		f.grpc, f.http = append(f.grpc, freePort(t)), append(f.http, freePort(t))
		f.states = append(f.states, t.TempDir())
	}
	return f
}

// config is slot i's config: mTLS with the replica certificate, its own
// state_dir, every slot as a peer, two rings on the backend, refreshing
// every second.
func (f *fleet) config(i int) string {
	var peers []string
	for _, p := range f.grpc {
		peers = append(peers, fmt.Sprintf("127.0.0.1:%d", p))
	}
	return fmt.Sprintf(`issuer: %[1]s
grpc:
  listen: 127.0.0.1:%[2]d
  tls: {cert_file: %[3]s/replica.pem, key_file: %[3]s/replica-key.pem, client_ca_file: %[3]s/ca.pem}
http: {listen: 127.0.0.1:%[4]d}
admin: {listen: 127.0.0.1:0}
log: {level: debug}
policy_file: %[3]s/policy.yaml
backend_timeout: 2s
state_dir: %[5]s
peers:
  addresses: [%[6]s]
  identities: [%[7]s]
key_rings:
  - {name: default, backend: '%[8]s', algorithm: ES256, token_max_ttl: 1m, jwks_max_age: 1s, refresh_interval: 1s, publish_ahead: 2s}
  - {name: eddsa, backend: '%[8]s', algorithm: EdDSA, token_max_ttl: 1m, jwks_max_age: 1s, refresh_interval: 1s}
`, testIssuer, f.grpc[i], f.pki.dir, f.http[i], f.states[i], strings.Join(peers, ", "), peerID, f.backend)
}

func (f *fleet) start(t *testing.T, i int) *process {
	t.Helper()
	f.procs[i] = startSignetWith(t, f.config(i), f.env...)
	return f.procs[i]
}

// kill SIGKILLs slot i's process and waits for it to exit.
func (f *fleet) kill(t *testing.T, i int) {
	t.Helper()
	p := f.procs[i]
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.exited
}

// client is an mTLS client of slot i as spiffe://signet.test/client.
func (f *fleet) client(t *testing.T, i int) *signetclient.Client {
	t.Helper()
	return f.pki.client(t, f.procs[i], "client")
}

// signerHealth is slot i's gRPC health of SignerService, over mTLS:
// SERVING once at least one ring can sign.
func (f *fleet) signerHealth(t *testing.T, c *signetclient.Client) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	st, err := c.Health(ctxT(t), "signet.v1.SignerService")
	if err != nil {
		t.Fatalf("health: %v", err)
	}
	return st
}

// ringsHealth is SERVING once every ring of the fleet's config can sign
// (each ring's own name, signet.v1.SignerService/RING), else the first
// other status: after a thaw each ring re-reads its backend on its own
// refresh, so the overall name, SERVING with one ring, says too little.
func (f *fleet) ringsHealth(t *testing.T, c *signetclient.Client) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	for _, ring := range []string{"default", "eddsa"} {
		st, err := c.Health(ctxT(t), "signet.v1.SignerService/"+ring)
		if err != nil {
			t.Fatalf("health of %s: %v", ring, err)
		}
		if st != healthpb.HealthCheckResponse_SERVING {
			return st
		}
	}
	return healthpb.HealthCheckResponse_SERVING
}

// startup is slot i's /statusz view of each ring's start-up: where its
// published keys came from ("" while it has started).
func (f *fleet) startup(t *testing.T, i int) map[string]string {
	t.Helper()
	resp, err := http.Get(f.procs[i].adminURL + "/statusz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct {
		KeyRings []struct {
			Name    string `json:"name"`
			Startup *struct {
				Reason        string `json:"reason"`
				PublishedFrom string `json:"published_from"`
			} `json:"startup"`
		} `json:"key_rings"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, r := range st.KeyRings {
		if r.Startup != nil {
			out[r.Name] = "waiting; published from: " + r.Startup.PublishedFrom
		}
	}
	return out
}

// availability polls every slot's JWKS and /readyz on their fixed ports
// until stopped, comparing each JWKS with want, byte for byte.
type availability struct {
	mu                                  sync.Mutex
	jwks, jwks200, identical, unreached int
	readyz, ready200                    int
	mismatches                          []string
	stop, done                          chan struct{}
}

func (f *fleet) watch(want []byte) *availability {
	a := &availability{stop: make(chan struct{}), done: make(chan struct{})}
	hc := &http.Client{Timeout: 2 * time.Second}
	get := func(u string) (int, []byte, error) {
		resp, err := hc.Get(u)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp.StatusCode, body, err
	}
	go func() {
		defer close(a.done)
		for n := 0; n < 100000; n++ { // bounded; stopped long before
			select {
			case <-a.stop:
				return
			case <-time.After(25 * time.Millisecond):
			}
			for i, port := range f.http {
				base := fmt.Sprintf("http://127.0.0.1:%d", port)
				code, body, err := get(base + "/.well-known/jwks.json")
				a.mu.Lock()
				switch {
				case err != nil:
					a.unreached++ // not listening: being restarted, or not started yet
				default:
					a.jwks++
					if code == 200 {
						a.jwks200++
					}
					if bytes.Equal(body, want) {
						a.identical++
					} else if len(a.mismatches) < 5 {
						a.mismatches = append(a.mismatches, fmt.Sprintf("slot %d: %d %s", i, code, body))
					}
				}
				a.mu.Unlock()
				if err != nil {
					continue
				}
				code, _, err = get(base + "/readyz")
				a.mu.Lock()
				if err == nil {
					a.readyz++
					if code == 200 {
						a.ready200++
					}
				}
				a.mu.Unlock()
			}
		}
	}()
	return a
}

// finish stops the poller, logs the figures and fails on any answered
// request that was not a 200 with the very JWKS before the outage.
func (a *availability) finish(t *testing.T, what string) {
	t.Helper()
	close(a.stop)
	<-a.done
	a.mu.Lock()
	defer a.mu.Unlock()
	t.Logf("JWKS availability (%s): %d JWKS requests answered, %d 200, %d byte-identical to before the outage; "+
		"%d /readyz answered, %d 200; %d requests found no listener (a replica restarting)",
		what, a.jwks, a.jwks200, a.identical, a.readyz, a.ready200, a.unreached)
	if a.jwks == 0 || a.jwks200 != a.jwks || a.identical != a.jwks || a.ready200 != a.readyz {
		t.Errorf("JWKS or /readyz not always 200 and identical during the outage; first mismatches: %q", a.mismatches)
	}
}

// restartDuringOutage: three replicas on one backend; the backend stops
// answering (freeze); each replica in turn is SIGKILLed and restarted:
// it serves the JWKS from its state_dir, byte-identical, and is ready,
// but does not sign. A fourth, new replica (empty state_dir) gets the key
// set from its peers. After thaw, every replica signs again within a
// refresh interval (plus a backend_timeout for a read already waiting).
func restartDuringOutage(t *testing.T, backend string, env []string, freeze, thaw func()) {
	f := newFleet(t, 4, backend, env...)
	for i := range 3 {
		f.start(t, i)
	}
	want := f.procs[0].jwks(t)
	for i := 1; i < 3; i++ {
		if !waitFor(30*time.Second, func() bool { return bytes.Equal(f.procs[i].jwks(t), want) }) {
			t.Fatalf("replica %d serves another JWKS than replica 0 before the outage", i)
		}
	}
	// Every replica has written its snapshot.
	for i := range 3 {
		if !waitFor(30*time.Second, func() bool { _, err := os.Stat(filepath.Join(f.states[i], "keyset.json")); return err == nil }) {
			t.Fatalf("replica %d wrote no snapshot", i)
		}
		if st, _ := os.Stat(filepath.Join(f.states[i], "keyset.json")); st.Mode().Perm() != 0o600 {
			t.Errorf("snapshot mode %v, want 0600", st.Mode().Perm())
		}
	}

	a := f.watch(want)
	freeze()
	for i := range 3 {
		f.kill(t, i)
		p := f.start(t, i)
		if got := p.jwks(t); !bytes.Equal(got, want) {
			t.Errorf("replica %d restarted during the outage serves another JWKS:\n%s\nwant\n%s", i, got, want)
		}
		c := f.client(t, i)
		if st := f.signerHealth(t, c); st != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Errorf("replica %d restarted without its backend: SignerService %v, want NOT_SERVING", i, st)
		}
		for ring, s := range f.startup(t, i) {
			if !strings.Contains(s, "state_dir") {
				t.Errorf("replica %d ring %s: %s, want published from state_dir", i, ring, s)
			}
		}
		if len(f.startup(t, i)) != 2 {
			t.Errorf("replica %d: /statusz shows %v, want both rings waiting", i, f.startup(t, i))
		}
	}
	p := f.start(t, 3) // a new pod: nothing on disk
	if got := p.jwks(t); !bytes.Equal(got, want) {
		t.Errorf("the new replica serves another JWKS than its peers:\n%s\nwant\n%s", got, want)
	}
	for ring, s := range f.startup(t, 3) {
		if !strings.Contains(s, "peer 127.0.0.1:") || !strings.Contains(s, peerID) {
			t.Errorf("new replica ring %s: %s, want published from a peer", ring, s)
		}
	}
	a.finish(t, "backend frozen, each replica SIGKILLed and restarted, a new replica started")

	thawed := time.Now()
	thaw()
	for i := range 4 {
		c := f.client(t, i)
		if !waitFor(30*time.Second, func() bool { return f.ringsHealth(t, c) == healthpb.HealthCheckResponse_SERVING }) {
			t.Fatalf("replica %d does not sign after the thaw: %v", i, f.startup(t, i))
		}
		for _, ring := range []string{"default", "eddsa"} {
			tok, err := c.Sign(ctxT(t), ring, signetclient.Audience("e2e"), signetclient.Subject(clientID))
			if err != nil {
				t.Fatalf("replica %d Sign(%s) after the thaw: %v", i, ring, err)
			}
			if err := goJOSEVerify(f.procs[i].jwks(t), tok.Token); err != nil {
				t.Errorf("replica %d: token after the thaw: %v", i, err)
			}
		}
		if s := f.startup(t, i); len(s) != 0 {
			t.Errorf("replica %d still waiting after the thaw: %v", i, s)
		}
	}
	t.Logf("after the thaw, all 4 replicas signed within %v (refresh_interval 1s, backend_timeout 2s)", time.Since(thawed).Round(time.Millisecond))
}

func TestRestartDuringOutageVault(t *testing.T) {
	t.Parallel()
	v := vaulttest.Start(t)
	u, _ := url.Parse(v.Addr)
	restartDuringOutage(t, "vault://"+u.Host+"/transit?scheme=http&key_prefix=signet-", []string{"VAULT_TOKEN=" + vaulttest.RootToken},
		func() { v.Freeze(t) }, func() { v.Thaw(t) })
}

func TestRestartDuringOutageAWSKMS(t *testing.T) {
	t.Parallel()
	kms := kmstest.Start()
	t.Cleanup(kms.Close)
	restartDuringOutage(t, "awskms:?region=us-east-1&endpoint="+url.QueryEscape(kms.URL), kmsEnv(""), kms.Freeze, kms.Thaw)
}

// A version revoked while a replica was down (through Vault's own API, not
// Signet) is published by the replica restarted during an outage (its disk
// snapshot is all it knows), leaves its JWKS once Vault answers, and never
// comes back: not on later refreshes, not after another restart during
// another outage (the snapshot on disk was rewritten).
func TestRevokedDuringOutageNeverReturnsVault(t *testing.T) {
	t.Parallel()
	v := vaulttest.Start(t)
	u, _ := url.Parse(v.Addr)
	f := newFleet(t, 1, "vault://"+u.Host+"/transit?scheme=http&key_prefix=signet-", "VAULT_TOKEN="+vaulttest.RootToken)
	p := f.start(t, 0)
	old := kids(t, p.jwks(t))
	if !waitFor(30*time.Second, func() bool { _, err := os.Stat(filepath.Join(f.states[0], "keyset.json")); return err == nil }) {
		t.Fatal("no snapshot written")
	}
	f.kill(t, 0)

	// Another client revokes version 1 of the default ring: a new Transit
	// version, and min_encryption_version past the old one.
	root := v.Root(t)
	if _, err := root.Logical().Write("transit/keys/signet-default/rotate", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := root.Logical().Write("transit/keys/signet-default/config", map[string]any{"min_encryption_version": 2}); err != nil {
		t.Fatal(err)
	}

	v.Freeze(t)
	p = f.start(t, 0)
	if got := kids(t, p.jwks(t)); !slices.Equal(got, old) {
		t.Errorf("restarted from disk during the outage: kids %v, want the snapshot's %v", got, old)
	}
	v.Thaw(t)
	c := f.client(t, 0)
	if !waitFor(30*time.Second, func() bool { return f.ringsHealth(t, c) == healthpb.HealthCheckResponse_SERVING }) {
		t.Fatalf("does not sign after the thaw: %v", f.startup(t, 0))
	}
	revoked := old[0]         // the default ring's first version (the JWKS lists rings in configuration order); eddsa's is old[1]
	for n := 0; n < 30; n++ { // 3 refresh intervals
		if got := kids(t, p.jwks(t)); slices.Contains(got, revoked) {
			t.Fatalf("the revoked version's kid %s is published after the thaw: %v", revoked, got)
		}
		time.Sleep(100 * time.Millisecond)
	}
	tok, err := c.Sign(ctxT(t), "default", signetclient.Audience("e2e"), signetclient.Subject(clientID))
	if err != nil || tok.Kid == revoked {
		t.Fatalf("Sign after the thaw: %v, kid %v (revoked %s)", err, tok, revoked)
	}

	// Another outage, another restart: the disk snapshot says revoked.
	v.Freeze(t)
	f.kill(t, 0)
	p = f.start(t, 0)
	if got := kids(t, p.jwks(t)); slices.Contains(got, revoked) {
		t.Errorf("restarted during a second outage, the revoked kid %s is published again: %v", revoked, got)
	}
	v.Thaw(t)
}

// kids lists a JWKS's kids in order.
func kids(t *testing.T, jwks []byte) []string {
	t.Helper()
	var set struct {
		Keys []struct {
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(jwks, &set); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, k := range set.Keys {
		out = append(out, k.Kid)
	}
	return out
}
