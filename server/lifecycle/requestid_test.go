package lifecycle

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/signet-dev/signet/backends"
	"github.com/signet-dev/signet/backends/local"
	"github.com/signet-dev/signet/internal/clocktest"
)

// flakyCreate is a backend that cannot record request ids (as Vault
// Transit or PKCS#11) and whose CreateVersion, once the backend made the
// version, runs afterCreate: the test cancels the caller there (a client
// timeout in flight) or makes the next read fail. Like a network backend,
// a create whose context ended before the answer came back fails although
// the version exists.
type flakyCreate struct {
	backends.Signer
	afterCreate func()
	failRead    atomic.Bool
}

func (f *flakyCreate) CreateVersion(ctx context.Context, r backends.KeyRing, latest string) (backends.Version, error) {
	v, err := f.Signer.CreateVersion(context.WithoutCancel(ctx), r, latest)
	if err == nil && f.afterCreate != nil {
		f.afterCreate()
	}
	if ctx.Err() != nil {
		return backends.Version{}, ctx.Err() // the answer was lost
	}
	return v, err
}

func (f *flakyCreate) Versions(ctx context.Context, r backends.KeyRing) ([]backends.Version, error) {
	if f.failRead.CompareAndSwap(true, false) {
		return nil, backends.Errorf(backends.KindUnavailable, "test", "the read after the create failed")
	}
	return f.Signer.Versions(ctx, r)
}

func newFlakyKeySet(t *testing.T) (*KeySet, *Ring, *flakyCreate) {
	t.Helper()
	c := clocktest.New()
	b := &flakyCreate{Signer: openLocal(t, c)}
	ks, err := New(context.Background(), []RingSpec{{Name: "r", Algorithm: backends.ES256, Schedule: testSchedule, Backend: b}},
		Options{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	return ks, ks.Ring("r"), b
}

// A Rotate whose caller times out while the backend creates the version
// still finishes the create, and its retry with the same request id on the
// same replica returns that version instead of making another.
func TestRotateRetryAfterClientTimeoutCreatesOneVersion(t *testing.T) {
	ks, r, b := newFlakyKeySet(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b.afterCreate = cancel
	const id = "7a1c2e3f-4b5d-4e6f-8a9b-0c1d2e3f4a5b"
	first, _, _, err := ks.Rotate(ctx, r, false, id)
	b.afterCreate = nil
	retry, _, replayed, rerr := ks.Rotate(context.Background(), r, false, id)
	if rerr != nil || !replayed {
		t.Fatalf("retry after the client timeout: replayed %v, %v", replayed, rerr)
	}
	if err == nil && first.ID != retry.ID {
		t.Errorf("the retry returned version %s, the timed-out call %s", retry.ID, first.ID)
	}
	if n := len(ks.Versions(r)); n != 2 {
		t.Errorf("%d versions after a timed-out Rotate and its retry, want 2 (the first and one created)", n)
	}
}

// A Rotate whose backend made the version but whose read after it failed
// returns the error, and its retry on the same replica returns that
// version instead of making another.
func TestRotateRetryAfterFailedReadCreatesOneVersion(t *testing.T) {
	ks, r, b := newFlakyKeySet(t)
	b.afterCreate = func() { b.failRead.Store(true) }
	const id = "8b2d3f4a-5c6e-4f7a-9b0c-1d2e3f4a5b6c"
	if _, _, _, err := ks.Rotate(context.Background(), r, false, id); backends.KindOf(err) != backends.KindUnavailable {
		t.Fatalf("Rotate whose read after the create failed: %v, want the read's Unavailable", err)
	}
	b.afterCreate = nil
	if _, _, replayed, err := ks.Rotate(context.Background(), r, false, id); err != nil || !replayed {
		t.Fatalf("retry: replayed %v, %v", replayed, err)
	}
	if n := len(ks.Versions(r)); n != 2 {
		t.Errorf("%d versions after a Rotate whose read failed and its retry, want 2", n)
	}
}

// Concurrent Rotates with one request id create one version: on one
// replica of a backend that records no ids, and across replicas of the
// local backend, which records them.
func TestConcurrentRotatesWithOneRequestID(t *testing.T) {
	const id, n = "9c3e4a5b-6d7f-4a8b-8c1d-2e3f4a5b6c7d", 4
	rotateAll := func(t *testing.T, rotate []func() (*Version, bool, error)) {
		t.Helper()
		var (
			wg    sync.WaitGroup
			mu    sync.Mutex
			ids   = map[string]bool{}
			fresh int
			errs  []error
		)
		for _, f := range rotate {
			wg.Add(1)
			go func() {
				defer wg.Done()
				v, replayed, err := f()
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
					return
				}
				ids[v.ID] = true
				if !replayed {
					fresh++
				}
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatal(err)
		}
		if len(ids) != 1 || fresh != 1 {
			t.Errorf("the Rotates returned versions %v, %d of them not replayed; want one version, created once", ids, fresh)
		}
	}

	t.Run("one replica", func(t *testing.T) {
		ks, r, _ := newFlakyKeySet(t)
		var rotate []func() (*Version, bool, error)
		for range n {
			rotate = append(rotate, func() (*Version, bool, error) {
				v, _, replayed, err := ks.Rotate(context.Background(), r, false, id)
				return v, replayed, err
			})
		}
		rotateAll(t, rotate)
		if got := len(ks.Versions(r)); got != 2 {
			t.Errorf("%d versions, want 2", got)
		}
	})

	t.Run("replicas on local", func(t *testing.T) {
		dir := t.TempDir()
		var rotate []func() (*Version, bool, error)
		var last *KeySet
		for range n {
			store, err := local.Open(dir, backends.OpenOptions{
				Getenv: func(string) string { return "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=" }})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { store.Close() })
			ks, err := New(context.Background(), []RingSpec{{Name: "r", Algorithm: backends.ES256, Schedule: testSchedule, Backend: store}}, Options{})
			if err != nil {
				t.Fatal(err)
			}
			r := ks.Ring("r")
			last = ks
			rotate = append(rotate, func() (*Version, bool, error) {
				v, _, replayed, err := ks.Rotate(context.Background(), r, false, id)
				return v, replayed, err
			})
		}
		rotateAll(t, rotate)
		if err := last.Refresh(context.Background(), last.Ring("r")); err != nil {
			t.Fatal(err)
		}
		if got := len(last.Versions(last.Ring("r"))); got != 2 {
			t.Errorf("%d versions, want 2", got)
		}
	})
}

// A request id used again with another revoke_previous than the call that
// created its version is refused (ErrRequestMismatch) by the replica that
// served that call, which creates and revokes nothing for it; the same id
// with the first call's revoke_previous is still replayed.
func TestRotateRequestIDWithOtherRevokePrevious(t *testing.T) {
	ks, r, _ := newFlakyKeySet(t)
	const id = "ad4f5b6c-7e8f-4a9b-8c0d-1e2f3a4b5c6d"
	first, _, _, err := ks.Rotate(context.Background(), r, false, id)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := ks.Rotate(context.Background(), r, true, id); !errors.Is(err, ErrRequestMismatch) ||
		backends.KindOf(err) != backends.KindInvalidArgument {
		t.Fatalf("the id again with revoke_previous: %v, want ErrRequestMismatch", err)
	}
	vs := ks.Versions(r)
	if len(vs) != 2 || vs[0].Disabled || vs[1].Disabled {
		t.Fatalf("after the refused retry: %d versions, disabled %v; want 2, none revoked", len(vs), disabledFlags(vs))
	}
	again, _, replayed, err := ks.Rotate(context.Background(), r, false, id)
	if err != nil || !replayed || again.ID != first.ID {
		t.Fatalf("the id again as first used: %v, replayed %v, %v", again, replayed, err)
	}
}
