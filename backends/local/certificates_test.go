package local

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/signet-dev/signet/backends"
	"github.com/signet-dev/signet/internal/clocktest"
)

var certRing = backends.KeyRing{Name: "certs", Algorithm: backends.ES256}

func openCertStore(t *testing.T, dir string, c *clocktest.Clock) *Store {
	t.Helper()
	s, err := Open(dir, backends.OpenOptions{Now: c.Now, RecoveryGrace: time.Minute,
		Getenv: func(string) string { return "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=" }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// A replica that listed the ring's directory just before a renewal still
// reads a chain: the superseded generation stays for the recovery grace,
// and a generation gone meanwhile makes the read list again rather than
// fail the ring.
func TestChainGenerationsOutliveAReadInFlight(t *testing.T) {
	c := clocktest.New()
	dir := t.TempDir()
	s := openCertStore(t, dir, c)
	ctx := context.Background()
	v, err := s.CreateVersion(ctx, certRing, "")
	if err != nil {
		t.Fatal(err)
	}
	a, b := [][]byte{[]byte("chain a")}, [][]byte{[]byte("chain b")}
	if _, err := s.PutCertificates(ctx, certRing, v.ID, nil, a); err != nil {
		t.Fatal(err)
	}
	ringDir := filepath.Join(dir, "rings", certRing.Name)
	stale, err := os.ReadDir(ringDir) // a replica's listing, before the renewal
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutCertificates(ctx, certRing, v.ID, a, b); err != nil {
		t.Fatal(err)
	}
	vs, err := s.Versions(ctx, certRing)
	if err != nil || !backends.SameChain(vs[0].Certificates, b) {
		t.Fatalf("Versions after the renewal: %v", err)
	}
	if _, err := os.Stat(filepath.Join(ringDir, chainName(v.ID, 1))); err != nil {
		t.Fatalf("the superseded generation went before the grace: %v", err)
	}
	if chains, _, err := s.chainsInForce(ringDir, stale); err != nil || !backends.SameChain(chains[v.ID], a) {
		t.Fatalf("a listing from before the renewal: %v", err)
	}
	c.Advance(2 * time.Minute)
	if _, err := s.Versions(ctx, certRing); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(ringDir, chainName(v.ID, 1))); !os.IsNotExist(err) {
		t.Fatalf("the superseded generation is still there after the grace: %v", err)
	}
	chains, _, err := s.chainsInForce(ringDir, stale) // names a generation now removed
	if err != nil || !backends.SameChain(chains[v.ID], b) {
		t.Fatalf("a listing naming a removed generation: %v; want the chain in force, read after listing again", err)
	}
}

// A chain file that does not decode is the problem of its version only:
// Versions still reads the ring, says what is wrong with that version, and
// a new chain replaces the bad one.
func TestMalformedChainIsTheVersionsProblem(t *testing.T) {
	c := clocktest.New()
	dir := t.TempDir()
	s := openCertStore(t, dir, c)
	ctx := context.Background()
	v1, err := s.CreateVersion(ctx, certRing, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateVersion(ctx, certRing, v1.ID); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "rings", certRing.Name, chainName(v1.ID, 1))
	if err := os.WriteFile(bad, []byte("not PEM at all"), 0o600); err != nil {
		t.Fatal(err)
	}
	vs, err := s.Versions(ctx, certRing)
	if err != nil || len(vs) != 2 {
		t.Fatalf("Versions with one malformed chain: %v", err)
	}
	if vs[0].Certificates != nil || vs[0].CertificatesProblem == "" || vs[1].CertificatesProblem != "" {
		t.Fatalf("version 1 problem %q, version 2 problem %q; want only version 1's", vs[0].CertificatesProblem, vs[1].CertificatesProblem)
	}
	good := [][]byte{[]byte("chain")}
	if stored, err := s.PutCertificates(ctx, certRing, v1.ID, nil, good); err != nil || !backends.SameChain(stored, good) {
		t.Fatalf("replacing the malformed chain: %v", err)
	}
}
