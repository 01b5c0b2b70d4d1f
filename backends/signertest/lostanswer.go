package signertest

import (
	"context"
	"testing"
	"time"

	"github.com/signet-dev/signet/backends"
	"github.com/signet-dev/signet/internal/clocktest"
)

// The lost-answer cases, for a backend whose transport can lose an answer
// (Harness.Lossy): the call that creates a version (the ring's first, or a
// rotation) is carried out by the backend, but its answer never arrives.
// Neither the transport nor the SDK may send it again, and the backend
// resolves what it did by reading, if it can. Then, once the recovery
// grace has passed:
//
//   - the creation made at most one version; if CreateVersion reported
//     success, Versions lists the version it returned;
//   - a failure is one the caller may retry: unavailable or a conflict;
//   - Leftovers lists nothing but objects scheduled for deletion;
//   - the ring still rotates and signs.
func (h Harness) testLostAnswer(t *testing.T, alg backends.Algorithm, run func(t *testing.T, name string, test func(t *testing.T))) {
	for _, first := range []bool{true, false} {
		name := "Rotate"
		if first {
			name = "FirstVersion"
		}
		run(t, name, func(t *testing.T) { h.loseCreateAnswer(t, alg, first) })
	}
}

func (h Harness) loseCreateAnswer(t *testing.T, alg backends.Algorithm, first bool) {
	lt := h.Lossy(t)
	clock := clocktest.New()
	var recovered int
	opts := backends.OpenOptions{Now: clock.Now, RecoveryGrace: crashGrace, OnRecover: func(string) { recovered++ }}
	s := lt.OpenWith(t, opts)
	t.Cleanup(func() { _ = s.Close() })
	ring := newRing(alg)
	var before []backends.Version
	latest := ""
	if !first {
		before = append(before, CreateVersion(t, s, ring, ""))
		latest = before[0].ID
	}
	lt.LoseNextCreate()
	ctx, cancel := context.WithTimeout(context.Background(), raceCallTimeout)
	v, err := s.CreateVersion(ctx, ring, latest)
	cancel()
	if lt.Lost() != 1 {
		t.Fatalf("%d answers were lost, want 1: the case proves nothing", lt.Lost())
	}
	t.Logf("CreateVersion with its answer lost: %q, %v", v.ID, err)
	if k := backends.KindOf(err); err != nil && k != backends.KindUnavailable && k != backends.KindConflict {
		t.Errorf("CreateVersion with its answer lost: %v (%v), want a version, or unavailable or a conflict to retry", err, k)
	}

	live := lt.OpenWith(t, opts)
	t.Cleanup(func() { _ = live.Close() })
	var vs []backends.Version
	for range 3 {
		if vs, err = live.Versions(ctxFor(t), ring); err != nil {
			t.Fatalf("Versions: %v", err)
		}
		clock.Advance(crashGrace + time.Second)
	}
	switch extra := len(vs) - len(before); {
	case extra < 0 || extra > 1:
		t.Fatalf("one creation whose answer was lost: %d versions, had %d", len(vs), len(before))
	case v.ID != "" && (extra != 1 || vs[len(vs)-1].ID != v.ID):
		t.Fatalf("CreateVersion returned %s, but Versions lists %+v", v.ID, vs)
	}
	if recovered > 0 {
		t.Logf("%d objects cleaned up", recovered)
	}
	ls, err := live.(backends.LeftoverLister).Leftovers(ctxFor(t), ring)
	if err != nil {
		t.Fatalf("Leftovers: %v", err)
	}
	for _, l := range ls {
		if l.State != "scheduled for deletion" {
			t.Errorf("after the grace, %s is left: %s (%s)", l.ID, l.Kind, l.State)
		}
	}
	latest = ""
	if len(vs) > 0 {
		latest = vs[len(vs)-1].ID
	}
	nv := CreateVersion(t, live, ring, latest)
	if err := SignAndVerify(ctxFor(t), live, ring, nv, signingInput(alg, `{"lost":"after"}`)); err != nil {
		t.Errorf("a version created after the lost answer does not sign: %v", err)
	}
}
