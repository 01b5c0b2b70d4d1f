package lifecycle

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/signet-dev/signet/backends"
	"github.com/signet-dev/signet/internal/clocktest"
)

// slowRead is a backend whose next read of versions, once armed, takes its
// list and then waits for release before returning it: a read that started
// before others and ends after them.
type slowRead struct {
	backends.Signer
	armed   atomic.Bool
	read    chan struct{} // the slow read has its list
	release chan struct{}
}

func (s *slowRead) Versions(ctx context.Context, r backends.KeyRing) ([]backends.Version, error) {
	vs, err := s.Signer.Versions(ctx, r)
	if s.armed.CompareAndSwap(true, false) {
		close(s.read)
		<-s.release
	}
	return vs, err
}

// A read that started before a rotation and ends after it never replaces
// the snapshot of the rotation's own read: the ring keeps the new version.
func TestOlderReadNeverReplacesANewerOne(t *testing.T) {
	c := clocktest.New()
	b := &slowRead{Signer: openLocal(t, c), read: make(chan struct{}), release: make(chan struct{})}
	ks, err := New(context.Background(), []RingSpec{{Name: "r", Algorithm: backends.ES256, Schedule: testSchedule, Backend: b}},
		Options{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	r := ks.Ring("r")
	b.armed.Store(true)
	slow := make(chan error)
	go func() { slow <- ks.Refresh(context.Background(), r) }()
	<-b.read
	created, _, _, err := ks.Rotate(context.Background(), r, false, "")
	if err != nil {
		t.Fatal(err)
	}
	close(b.release)
	if err := <-slow; err != nil {
		t.Fatalf("the slow read: %v", err)
	}
	if vs := ks.Versions(r); len(vs) != 2 || find(vs, created.ID) == nil {
		t.Fatalf("%d versions after the slow read ended; want 2, with the rotation's %s", len(vs), created.ID)
	}
}

// A hook may read the key set, as the server's do, even when the install
// that calls it happens inside certify, which holds the ring's certificate
// lock for its whole run: nothing a read takes is held around a hook.
func TestHooksMayReadTheKeySet(t *testing.T) {
	c := clocktest.New()
	b := &failing{Store: openLocalDir(t, t.TempDir(), c)}
	b.refusePut.Store(true) // the first version starts withheld, without a chain
	var ks *KeySet
	read := func() { // hooks run only once New has returned, and ks is set
		ks.Published()
		ks.SigningProblems()
		ks.Status()
		for _, r := range ks.Rings() {
			for _, v := range ks.Versions(r) {
				ks.CertificateProblem(r, v)
			}
		}
	}
	ks, err := New(context.Background(), []RingSpec{{Name: "r", Algorithm: backends.ES256, Schedule: testSchedule, Backend: b,
		Certificates: &CertSpec{Source: SourceSelfSigned, Profile: certProfile, Required: true}}},
		Options{Now: c.Now, OnChange: read, OnHealth: read})
	if err != nil {
		t.Fatal(err)
	}
	r := ks.Ring("r")
	if v, err := ks.Active(r); err == nil {
		t.Fatalf("version %s signs without its required chain", v.ID)
	}
	b.refusePut.Store(false)
	done := make(chan struct{})
	go func() { ks.Tick(context.Background(), r); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("a tick did not end: a hook reading the key set waits on a lock held around it")
	}
	if _, err := ks.Active(r); err != nil {
		t.Fatalf("no version signs once its chain is stored: %v", err)
	}
}
