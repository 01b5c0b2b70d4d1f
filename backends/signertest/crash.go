package signertest

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/signet-dev/signet/backends"
	"github.com/signet-dev/signet/internal/clocktest"
)

// The crash cases. Each operation that makes several backend calls
// (creating a ring's first version, rotating, disabling a version) is run
// once to record the step boundaries the backend declares with
// backends.Step; then, for every boundary, a case stops the operation there
// as a crash would and checks the contract of backends/recovery.go:
//
//   - the goroutine running the operation is parked at the step and only
//     ends (runtime.Goexit) when the case is over: nothing after the step,
//     deferred or not, runs while the case looks at the backend, and the
//     instance that ran it is never used again (a crashed process's memory
//     is gone);
//   - a fresh instance opened on the same backend (the live replica), with
//     a clock the case moves, must leave everything alone within the grace
//     (it could be another replica's operation in flight), and after it
//     must have converged within two refreshes (Versions calls): one
//     published version more or none (disabling: none more), and
//     Leftovers lists nothing but objects scheduled for deletion;
//   - the ring still rotates and signs, and a retried DisableVersion
//     finishes an interrupted one.
//
// A backend that adds a step to an operation adds a case by itself.

// crashGrace is the recovery grace of the instances the crash cases open;
// their clock moves past it instead of the test waiting.
const crashGrace = time.Minute

// crashScenario is an operation the crash cases interrupt: setup prepares
// the ring (with an ordinary instance) and returns its versions; op runs on
// the instance that crashes.
type crashScenario struct {
	name  string
	setup func(t *testing.T, s backends.Signer, ring backends.KeyRing) []backends.Version
	op    func(ctx context.Context, s backends.Signer, ring backends.KeyRing, before []backends.Version) error
	// disables: the operation disables before[0] rather than creating.
	disables bool
	// prefix: the operation is DisableVersionsBefore (backends.PrefixDisabler only).
	prefix bool
	// certificates: the operation stores a certificate chain for
	// before[0] (backends.CertificateStore only); after the crash the
	// version has that whole chain or none, never a part.
	certificates bool
}

var crashScenarios = []crashScenario{
	{name: "FirstVersion",
		setup: func(*testing.T, backends.Signer, backends.KeyRing) []backends.Version { return nil },
		op: func(ctx context.Context, s backends.Signer, ring backends.KeyRing, _ []backends.Version) error {
			_, err := s.CreateVersion(ctx, ring, "")
			return err
		}},
	{name: "Rotate",
		setup: func(t *testing.T, s backends.Signer, ring backends.KeyRing) []backends.Version {
			return []backends.Version{CreateVersion(t, s, ring, "")}
		},
		op: func(ctx context.Context, s backends.Signer, ring backends.KeyRing, before []backends.Version) error {
			_, err := s.CreateVersion(ctx, ring, before[len(before)-1].ID)
			return err
		}},
	{name: "Disable", disables: true,
		setup: func(t *testing.T, s backends.Signer, ring backends.KeyRing) []backends.Version {
			v1 := CreateVersion(t, s, ring, "")
			return []backends.Version{v1, CreateVersion(t, s, ring, v1.ID)}
		},
		op: func(ctx context.Context, s backends.Signer, ring backends.KeyRing, before []backends.Version) error {
			return s.DisableVersion(ctx, ring, before[0].ID)
		}},
	{name: "DisableBefore", disables: true, prefix: true,
		setup: func(t *testing.T, s backends.Signer, ring backends.KeyRing) []backends.Version {
			v1 := CreateVersion(t, s, ring, "")
			return []backends.Version{v1, CreateVersion(t, s, ring, v1.ID)}
		},
		op: func(ctx context.Context, s backends.Signer, ring backends.KeyRing, before []backends.Version) error {
			return s.(backends.PrefixDisabler).DisableVersionsBefore(ctx, ring, before[1].ID)
		}},
	{name: "PutCertificates", certificates: true,
		setup: func(t *testing.T, s backends.Signer, ring backends.KeyRing) []backends.Version {
			return []backends.Version{CreateVersion(t, s, ring, "")}
		},
		op: func(ctx context.Context, s backends.Signer, ring backends.KeyRing, before []backends.Version) error {
			chain, err := twoCertificates(ctx, s, ring, before[0])
			if err != nil {
				return err
			}
			_, err = s.(backends.CertificateStore).PutCertificates(ctx, ring, before[0].ID, nil, chain)
			return err
		}},
}

// testCrash runs a case per step boundary of each scenario.
func (h Harness) testCrash(t *testing.T, alg backends.Algorithm, run func(t *testing.T, name string, test func(t *testing.T))) {
	if h.OpenWith == nil {
		t.Fatal("the crash cases need Harness.OpenWith")
	}
	_, stores := h.open(t).(backends.CertificateStore)
	_, prefixes := h.open(t).(backends.PrefixDisabler)
	for _, sc := range crashScenarios {
		if sc.certificates && !stores || sc.prefix && !prefixes {
			continue // the backend keeps no certificates, or revokes one version at a time
		}
		steps := h.recordSteps(t, alg, sc)
		if len(steps) == 0 && sc.certificates {
			continue // one backend call (Vault, AWS KMS): nothing to interrupt
		}
		if len(steps) == 0 {
			t.Errorf("%s: the backend declares no step boundary (backends.Step)", sc.name)
		}
		t.Logf("%s: step boundaries %s", sc.name, strings.Join(steps, ", "))
		for i, step := range steps {
			run(t, fmt.Sprintf("%s/%02d_%s", sc.name, i+1, strings.ReplaceAll(step, " ", "_")), func(t *testing.T) {
				h.crashAt(t, alg, sc, i, step)
			})
		}
	}
}

func (h Harness) recordSteps(t *testing.T, alg backends.Algorithm, sc crashScenario) []string {
	t.Helper()
	s := h.OpenWith(t, backends.OpenOptions{})
	defer s.Close()
	ring := newRing(alg)
	before := sc.setup(t, s, ring)
	var steps []string
	ctx := backends.WithStepHook(ctxFor(t), func(step string) { steps = append(steps, step) })
	if err := sc.op(ctx, s, ring, before); err != nil {
		t.Fatalf("%s without a crash: %v", sc.name, err)
	}
	return steps
}

func (h Harness) crashAt(t *testing.T, alg backends.Algorithm, sc crashScenario, at int, step string) {
	setup := h.open(t)
	ring := newRing(alg)
	before := sc.setup(t, setup, ring)

	// The replica that crashes.
	clock := clocktest.New()
	crashed := h.OpenWith(t, backends.OpenOptions{Now: clock.Now, RecoveryGrace: crashGrace})
	reached, release, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	n := 0
	ctx := backends.WithStepHook(ctxFor(t), func(s string) {
		if n++; n == at+1 {
			close(reached)
			<-release
			runtime.Goexit()
		}
	})
	var opErr error
	go func() {
		defer close(done)
		opErr = sc.op(ctx, crashed, ring, before)
	}()
	t.Cleanup(func() {
		close(release)
		<-done
		_ = crashed.Close() // a crashed instance's Close may fail: it stands for a dead process
	})
	select {
	case <-reached:
	case <-done:
		t.Fatalf("%s ended (%v) before step %d (%s)", sc.name, opErr, at+1, step)
	}

	// The live replica.
	var recovered atomic.Int64
	live := h.OpenWith(t, backends.OpenOptions{Now: clock.Now, RecoveryGrace: crashGrace,
		OnRecover: func(string) { recovered.Add(1) }})
	t.Cleanup(func() {
		if err := live.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	lister, ok := live.(backends.LeftoverLister)
	if !ok {
		t.Fatalf("%T does not list its leftovers (backends.LeftoverLister)", live)
	}
	leftovers := func() []backends.Leftover {
		t.Helper()
		ls, err := lister.Leftovers(ctxFor(t), ring)
		if err != nil {
			t.Fatalf("Leftovers: %v", err)
		}
		return ls
	}
	versions := func() []backends.Version {
		t.Helper()
		vs, err := live.Versions(ctxFor(t), ring)
		if err != nil {
			t.Fatalf("Versions after a crash after %s: %v", step, err)
		}
		return vs
	}
	left := leftovers()
	versions()
	if n := recovered.Load(); n != 0 {
		t.Errorf("a refresh within the grace cleaned up %d objects: it could have been another replica's %s in flight", n, sc.name)
	}
	if again := leftovers(); len(again) != len(left) {
		t.Errorf("within the grace the leftovers went from %v to %v", left, again)
	}
	clock.Advance(crashGrace + time.Second)
	versions()
	clock.Advance(crashGrace + time.Second)
	vs := versions()

	// One version more or none (disabling: none), the old ones unchanged.
	extra := len(vs) - len(before)
	if extra < 0 || extra > 1 || sc.disables && extra != 0 {
		t.Fatalf("after a crash after %s: %d versions, had %d", step, len(vs), len(before))
	}
	for i, v := range before {
		if vs[i].ID != v.ID {
			t.Errorf("version %d is %s, was %s", i, vs[i].ID, v.ID)
		}
	}
	if sc.certificates {
		checkCrashedChain(t, live, ring, vs[0])
	}
	if extra == 1 {
		nv := vs[len(vs)-1]
		if nv.Disabled {
			t.Errorf("the version left by the crash is disabled")
		}
		input := signingInput(alg, `{"crash":"survivor"}`)
		if err := SignAndVerify(ctxFor(t), live, ring, nv, input); err != nil {
			t.Errorf("the version left by the crash does not sign: %v", err)
		}
	}
	for _, l := range leftovers() {
		if l.State != "scheduled for deletion" {
			t.Errorf("after two refreshes past the grace, %s is left: %s (%s)", l.ID, l.Kind, l.State)
		}
	}

	// The ring still works.
	if sc.disables {
		if err := live.DisableVersion(ctxFor(t), ring, before[0].ID); err != nil {
			t.Fatalf("retrying the interrupted DisableVersion: %v", err)
		}
		if vs := versions(); !vs[0].Disabled || vs[1].Disabled {
			t.Errorf("after the retried DisableVersion: disabled %v %v, want true false", vs[0].Disabled, vs[1].Disabled)
		}
	}
	latest := ""
	if len(vs) > 0 {
		latest = vs[len(vs)-1].ID
	}
	v := CreateVersion(t, live, ring, latest)
	input := signingInput(alg, `{"crash":"after"}`)
	if err := SignAndVerify(ctxFor(t), live, ring, v, input); err != nil {
		t.Errorf("a version created after the recovery does not sign: %v", err)
	}
	for _, l := range leftovers() {
		if l.State != "scheduled for deletion" {
			t.Errorf("after a rotation that completed, %s is left: %s (%s)", l.ID, l.Kind, l.State)
		}
	}
}
