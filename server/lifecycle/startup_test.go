package lifecycle

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/signet-dev/signet/backends"
	"github.com/signet-dev/signet/internal/clocktest"
)

// outage is a backend that, while down, answers every call unavailable.
type outage struct {
	backends.Signer
	down atomic.Bool
}

var errDown = backends.Errorf(backends.KindUnavailable, "test", "the backend does not answer")

func (o *outage) Versions(ctx context.Context, r backends.KeyRing) ([]backends.Version, error) {
	if o.down.Load() {
		return nil, errDown
	}
	return o.Signer.Versions(ctx, r)
}

func (o *outage) Sign(ctx context.Context, r backends.KeyRing, id string, in []byte) ([]byte, error) {
	if o.down.Load() {
		return nil, errDown
	}
	return o.Signer.Sign(ctx, r, id, in)
}

func (o *outage) CheckKeyUsage(ctx context.Context, r backends.KeyRing) error {
	if o.down.Load() {
		return errDown
	}
	return o.Signer.(backends.UsageChecker).CheckKeyUsage(ctx, r)
}

func kidsOf(vs []*Version) []string {
	var out []string
	for _, v := range vs {
		out = append(out, v.Kid)
	}
	return out
}

// A ring whose backend does not answer at start-up publishes the key set
// Fallback gives, does not sign, and starts at the first Tick after its
// backend answers and its keys pass the usage check; then the backend's
// listing replaces the seed: a version revoked meanwhile is gone.
func TestStartWithoutTheBackend(t *testing.T) {
	c := clocktest.New()
	dir := t.TempDir()
	b := &outage{Signer: openLocalDir(t, dir, c)}
	spec := RingSpec{Name: "r", Algorithm: backends.ES256, Schedule: testSchedule, Backend: b}
	ks1, err := New(context.Background(), []RingSpec{spec}, Options{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	saved := ks1.Saved()
	if len(saved) != 1 || len(saved[0].Versions) != 1 || saved[0].ReadAt.IsZero() {
		t.Fatalf("Saved: %+v", saved)
	}
	seedKids := kidsOf(ks1.Published())
	// Meanwhile another replica revokes version 1 (an emergency rotation).
	if _, _, _, err := ks1.Rotate(context.Background(), ks1.Ring("r"), true, ""); err != nil {
		t.Fatal(err)
	}

	b.down.Store(true)
	var asked []string
	fallback := func(_ context.Context, ring string, alg backends.Algorithm) (Seed, error) {
		asked = append(asked, ring+"/"+string(alg))
		return Seed{Versions: saved[0].Versions, ReadAt: saved[0].ReadAt, Source: "test snapshot"}, nil
	}
	var healthChanges atomic.Int32
	ks, err := New(context.Background(), []RingSpec{spec}, Options{Now: c.Now, Fallback: fallback,
		OnHealth: func() { healthChanges.Add(1) }})
	if err != nil {
		t.Fatalf("New with the backend down: %v", err)
	}
	r := ks.Ring("r")
	if !slices.Equal(asked, []string{"r/ES256"}) {
		t.Errorf("Fallback asked for %v", asked)
	}
	if got := kidsOf(ks.Published()); !slices.Equal(got, seedKids) {
		t.Errorf("published %v, want the seed's %v", got, seedKids)
	}
	if _, err := ks.Active(r); backends.KindOf(err) != backends.KindUnavailable {
		t.Errorf("Active before the backend answered: %v, want unavailable", err)
	}
	if len(ks.SigningProblems()) == 0 {
		t.Error("no signing problem while the ring waits")
	}
	if w, ok := ks.Waiting(r); !ok || w.Source != "test snapshot" || w.Reason == nil {
		t.Errorf("Waiting: %v %+v", ok, w)
	}
	if _, _, _, err := ks.Rotate(context.Background(), r, false, ""); backends.KindOf(err) != backends.KindUnavailable {
		t.Errorf("Rotate while waiting: %v, want unavailable", err)
	}
	if st := ks.Status()[0]; !st.Waiting || st.Source != "test snapshot" || !st.ReadAt.Equal(saved[0].ReadAt) {
		t.Errorf("Status: %+v", st)
	}
	ks.Tick(context.Background(), r) // still down
	if _, err := ks.Active(r); err == nil {
		t.Error("signs while the backend is still down")
	}

	// The backend answers, but a key may now do more than sign: the ring
	// still does not sign.
	b.down.Store(false)
	keyFile := filepath.Join(dir, "rings", "r", "2.json")
	if err := os.Chmod(keyFile, 0o644); err != nil {
		t.Fatal(err)
	}
	ks.Tick(context.Background(), r)
	if _, err := ks.Active(r); err == nil {
		t.Error("signs before the key usage check passed")
	}
	if err := os.Chmod(keyFile, 0o600); err != nil {
		t.Fatal(err)
	}
	before := healthChanges.Load()
	ks.Tick(context.Background(), r)
	if _, ok := ks.Waiting(r); ok {
		t.Fatalf("still waiting after the backend answered: %v", ks.SigningProblems())
	}
	if healthChanges.Load() == before {
		t.Error("OnHealth not called when the ring started")
	}
	published := kidsOf(ks.Published())
	if slices.Contains(published, seedKids[0]) {
		t.Errorf("the version revoked meanwhile is still published: %v", published)
	}
	if want := kidsOf(ks1.Published()); !slices.Equal(published, want) {
		t.Errorf("published %v, want the backend's %v", published, want)
	}
}

// With nothing to start from, the ring publishes nothing, says so
// (Unseeded), and starts when the backend answers. Other failures still
// fail New.
func TestStartEmptyOrFail(t *testing.T) {
	c := clocktest.New()
	b := &outage{Signer: openLocal(t, c)}
	b.down.Store(true)
	spec := RingSpec{Name: "r", Algorithm: backends.ES256, Schedule: testSchedule, Backend: b}
	ks, err := New(context.Background(), []RingSpec{spec}, Options{Now: c.Now,
		Fallback: func(context.Context, string, backends.Algorithm) (Seed, error) {
			return Seed{}, errors.New("no snapshot")
		}})
	if err != nil {
		t.Fatal(err)
	}
	if len(ks.Published()) != 0 || !slices.Equal(ks.Unseeded(), []string{"r"}) {
		t.Errorf("published %v, unseeded %v", ks.Published(), ks.Unseeded())
	}
	b.down.Store(false)
	ks.Tick(context.Background(), ks.Ring("r"))
	if _, err := ks.Active(ks.Ring("r")); err != nil || len(ks.Unseeded()) != 0 {
		t.Errorf("after the backend answered: %v, unseeded %v", err, ks.Unseeded())
	}

	// A seed of another algorithm's keys is refused: the ring starts empty.
	b2 := &outage{Signer: openLocal(t, c)}
	b2.down.Store(true)
	ks2, err := New(context.Background(), []RingSpec{{Name: "r", Algorithm: backends.EdDSA, Schedule: testSchedule, Backend: b2}},
		Options{Now: c.Now, Fallback: func(context.Context, string, backends.Algorithm) (Seed, error) {
			return Seed{Versions: ks.Saved()[0].Versions, ReadAt: c.Now(), Source: "wrong"}, nil
		}})
	if err != nil || len(ks2.Published()) != 0 {
		t.Errorf("a seed of ES256 keys for an EdDSA ring: %v, published %v", err, ks2.Published())
	}

	deniedSpec := RingSpec{Name: "r", Algorithm: backends.ES256, Schedule: testSchedule, Backend: permissionDenied{openLocal(t, c)}}
	if _, err := New(context.Background(), []RingSpec{deniedSpec}, Options{Now: c.Now}); backends.KindOf(err) != backends.KindPermissionDenied {
		t.Errorf("a backend refusing Signet's credentials at start-up: %v, want New to fail", err)
	}
}

type permissionDenied struct{ backends.Signer }

func (permissionDenied) Versions(context.Context, backends.KeyRing) ([]backends.Version, error) {
	return nil, backends.Errorf(backends.KindPermissionDenied, "test", "denied")
}
