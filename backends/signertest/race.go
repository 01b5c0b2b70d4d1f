package signertest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/signet-dev/signet/backends"
	"github.com/signet-dev/signet/internal/clocktest"
)

// The race cases. Two replicas (instances) rotate one ring from the same
// newest version, and one of them is stopped at a step boundary
// (backends.Step) while the other goes on. For every boundary k of a
// rotation, recorded as the crash cases record them, three interleavings:
//
//   - Paused/k: A stops at k; B rotates to completion; A resumes.
//   - Both/k: A stops at k; B stops at its own k-th boundary (or ends
//     before reaching it); A resumes and completes; then B resumes.
//   - Together/k: A and B stop at k as in Both; both resume at once.
//
// Each call has raceCallTimeout of running time: a backend that waits for
// the other replica (Vault's rotation lock) gives up while that one is
// stopped, as it would if it had died. Then, once the recovery
// grace has passed (a clock the case moves, as in the crash cases):
//
//   - exactly one of the two calls reported success, the other failed
//     with a conflict or as unavailable (both safe to retry);
//   - Versions lists exactly one version more, the one reported: a
//     reported success is final;
//   - Leftovers lists nothing but objects scheduled for deletion;
//   - the ring still rotates and signs.
//
// A backend that adds a step to its rotation adds cases by itself.

// raceCallTimeout bounds the call of the replica that runs while the other
// is stopped: a backend_timeout.
const raceCallTimeout = 5 * time.Second

var raceModes = []string{"Paused", "Both", "Together"}

// testRace runs the race cases for each step boundary of a rotation.
func (h Harness) testRace(t *testing.T, alg backends.Algorithm, run func(t *testing.T, name string, test func(t *testing.T))) {
	if h.OpenWith == nil {
		t.Fatal("the race cases need Harness.OpenWith")
	}
	var rotate crashScenario
	for _, sc := range crashScenarios {
		if sc.name == "Rotate" {
			rotate = sc
		}
	}
	steps := h.recordSteps(t, alg, rotate)
	if len(steps) == 0 {
		t.Fatal("a rotation declares no step boundary (backends.Step)")
	}
	for _, mode := range raceModes {
		for k, step := range steps {
			run(t, fmt.Sprintf("%s/%02d_%s", mode, k+1, strings.ReplaceAll(step, " ", "_")), func(t *testing.T) {
				h.raceAt(t, alg, mode, k, step)
			})
		}
	}
}

// racer is one replica's CreateVersion, stoppable at its stop-th step
// boundary (counting from 0; -1: never). Its context ends once it has run
// for raceCallTimeout before stopping or after resuming (a backend_timeout
// per call, as a server gives; the time stopped does not count, as a
// process that is stopped sees no time pass).
type racer struct {
	reached, release, done chan struct{}
	once                   sync.Once
	timer                  *time.Timer
	v                      backends.Version
	err                    error
}

// resume lets a stopped racer go on; calling it again does nothing.
func (r *racer) resume() {
	r.once.Do(func() {
		r.timer.Reset(raceCallTimeout)
		close(r.release)
	})
}

func startRacer(s backends.Signer, ring backends.KeyRing, latest string, stop int) *racer {
	r := &racer{reached: make(chan struct{}), release: make(chan struct{}), done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	r.timer = time.AfterFunc(raceCallTimeout, cancel)
	n := 0
	ctx = backends.WithStepHook(ctx, func(string) {
		if n++; n == stop+1 {
			r.timer.Stop()
			close(r.reached)
			<-r.release
		}
	})
	go func() {
		defer close(r.done)
		defer cancel()
		r.v, r.err = s.CreateVersion(ctx, ring, latest)
	}()
	return r
}

// stopped waits until the racer stops at its step (true) or ends (false).
func (r *racer) stopped() bool {
	select {
	case <-r.reached:
		return true
	case <-r.done:
		return false
	}
}

func (h Harness) raceAt(t *testing.T, alg backends.Algorithm, mode string, k int, step string) {
	setup := h.open(t)
	ring := newRing(alg)
	before := []backends.Version{CreateVersion(t, setup, ring, "")}
	latest := before[0].ID

	clock := clocktest.New()
	opts := backends.OpenOptions{Now: clock.Now, RecoveryGrace: crashGrace}
	a, b := h.OpenWith(t, opts), h.OpenWith(t, opts)
	t.Cleanup(func() { _ = a.Close(); _ = b.Close() })

	ra := startRacer(a, ring, latest, k)
	t.Cleanup(func() { ra.resume(); <-ra.done })
	if !ra.stopped() {
		t.Fatalf("A's rotation ended (%v) before step %d (%s)", ra.err, k+1, step)
	}
	stopB := k
	if mode == "Paused" {
		stopB = -1
	}
	rb := startRacer(b, ring, latest, stopB)
	t.Cleanup(func() { rb.resume(); <-rb.done })
	rb.stopped()
	switch mode {
	case "Paused", "Both":
		ra.resume()
		<-ra.done
		rb.resume()
	case "Together":
		ra.resume()
		rb.resume()
	}
	<-ra.done
	<-rb.done
	t.Logf("A (stopped after %s): %q, %v; B: %q, %v", step, ra.v.ID, ra.err, rb.v.ID, rb.err)

	var won []backends.Version
	for name, r := range map[string]*racer{"A": ra, "B": rb} {
		switch k := backends.KindOf(r.err); {
		case r.err == nil:
			won = append(won, r.v)
		case k != backends.KindConflict && k != backends.KindUnavailable:
			t.Errorf("%s's rotation failed with %v (%v), want a conflict or unavailable", name, r.err, k)
		}
	}
	if len(won) != 1 {
		t.Fatalf("%d rotations reported success (%+v), want exactly one", len(won), won)
	}

	// After the grace, on a replica of its own.
	var recovered int
	live := h.OpenWith(t, backends.OpenOptions{Now: clock.Now, RecoveryGrace: crashGrace, OnRecover: func(string) { recovered++ }})
	t.Cleanup(func() {
		if err := live.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	versions := func() []backends.Version {
		t.Helper()
		vs, err := live.Versions(ctxFor(t), ring)
		if err != nil {
			t.Fatalf("Versions: %v", err)
		}
		return vs
	}
	versions()
	clock.Advance(crashGrace + time.Second)
	versions()
	clock.Advance(crashGrace + time.Second)
	vs := versions()
	if len(vs) != len(before)+1 || vs[len(vs)-1].ID != won[0].ID || vs[0].ID != before[0].ID {
		ids := make([]string, len(vs))
		for i, v := range vs {
			ids[i] = v.ID
		}
		t.Fatalf("after the race and the grace Versions lists %v; want %s and the version reported, %s", ids, before[0].ID, won[0].ID)
	}
	if recovered > 0 {
		t.Logf("the live replica cleaned up %d objects", recovered)
	}
	lister, ok := live.(backends.LeftoverLister)
	if !ok {
		t.Fatalf("%T does not list its leftovers (backends.LeftoverLister)", live)
	}
	ls, err := lister.Leftovers(ctxFor(t), ring)
	if err != nil {
		t.Fatalf("Leftovers: %v", err)
	}
	for _, l := range ls {
		if l.State != "scheduled for deletion" {
			t.Errorf("after the race and the grace, %s is left: %s (%s)", l.ID, l.Kind, l.State)
		}
	}
	input := signingInput(alg, `{"race":"winner"}`)
	if err := SignAndVerify(ctxFor(t), live, ring, vs[len(vs)-1], input); err != nil {
		t.Errorf("the version reported does not sign: %v", err)
	}
	v := CreateVersion(t, live, ring, won[0].ID)
	if err := SignAndVerify(ctxFor(t), live, ring, v, signingInput(alg, `{"race":"after"}`)); err != nil {
		t.Errorf("a version created after the race does not sign: %v", err)
	}
}
