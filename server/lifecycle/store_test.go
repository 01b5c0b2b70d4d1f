package lifecycle

import (
	"context"
	"sync"
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

// Two rings read, rotated, signed with and inspected from several
// goroutines at once, with the Run loop going: every rotation is kept (the
// read that started last is the one stored, whatever order the reads end
// in), and the race detector sees the store, the read log, health and
// certificates from every side.
func TestConcurrentUseOfTwoRings(t *testing.T) {
	const workers, rounds = 4, 15
	c := clocktest.New()
	b := openLocal(t, c)
	var ks *KeySet
	read := func() { ks.Published(); ks.SigningProblems(); ks.Status() }
	ks, err := New(context.Background(), []RingSpec{{Name: "a", Algorithm: backends.ES256, Schedule: testSchedule, Backend: b},
		{Name: "b", Algorithm: backends.ES256, Schedule: testSchedule, Backend: b}},
		Options{Now: c.Now, OnChange: read, OnHealth: read})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ks.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	var rotations [2]atomic.Int32
	errs := make(chan error, workers*rounds*4)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range rounds {
				k := (w + i) % 2
				r := ks.Rings()[k]
				switch i % 3 {
				case 0:
					if _, _, _, err := ks.Rotate(ctx, r, false, ""); err != nil {
						errs <- err
						continue
					}
					rotations[k].Add(1)
				case 1:
					if err := ks.Refresh(ctx, r); err != nil {
						errs <- err
					}
				case 2:
					v, err := ks.Active(r)
					if err == nil {
						_, err = ks.SignWith(ctx, r, v, []byte("input"))
					}
					if err != nil {
						errs <- err
					}
				}
				read()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for k, r := range ks.Rings() {
		listed, err := b.Versions(ctx, r.key)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := len(ks.Versions(r)), len(listed); got != want || int32(got) != 1+rotations[k].Load() {
			t.Errorf("ring %s: %d versions stored, %d listed, %d rotations; want every rotation's version stored", r.Name, got, want, rotations[k].Load())
		}
	}
}
