package lifecycle

import (
	"context"
	"sync/atomic"
	"testing"

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
