package lifecycle

import (
	"context"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/signet-dev/signet/backends"
	"github.com/signet-dev/signet/backends/local"
	"github.com/signet-dev/signet/backends/vault"
	"github.com/signet-dev/signet/internal/clocktest"
	"github.com/signet-dev/signet/internal/vaulttest"
)

// newKeySet is a key set with one ES256 ring on a local store in a
// temporary directory, on a clock the test moves.
func newKeySet(t *testing.T, onChange func()) (*KeySet, *Ring, *clocktest.Clock) {
	t.Helper()
	c := clocktest.New()
	ks, err := New(context.Background(), []RingSpec{{Name: "r", Algorithm: backends.ES256, Schedule: testSchedule, Backend: openLocal(t, c)}},
		Options{Now: c.Now, OnChange: onChange})
	if err != nil {
		t.Fatal(err)
	}
	return ks, ks.Ring("r"), c
}

// Reading the key set after a boundary has passed gives the states of now
// and stores nothing; the Run loop (here Tick) installs them.
func TestReadsFollowTheClockWithoutWriting(t *testing.T) {
	var changes atomic.Int32
	ks, r, c := newKeySet(t, func() { changes.Add(1) })
	first, err := ks.Active(r)
	if err != nil {
		t.Fatal(err)
	}
	created, _, _, err := ks.Rotate(context.Background(), r, false, "")
	if err != nil {
		t.Fatal(err)
	}
	if created.State != StatePending || changes.Load() == 0 {
		t.Fatalf("rotated version is %v and OnChange ran %d times; want pending and at least once", created.State, changes.Load())
	}
	stored, before := r.snap.load(), changes.Load()

	c.Advance(testSchedule.PublishAhead)
	if v, _ := ks.Active(r); v.Kid != created.Kid {
		t.Errorf("after publish_ahead the active kid is %s, want the rotated %s (not %s)", v.Kid, created.Kid, first.Kid)
	}
	if vs := ks.Versions(r); vs[0].State != StateRetiring || vs[1].State != StateActive {
		t.Errorf("states %v, %v; want retiring, active", vs[0].State, vs[1].State)
	}
	if got := len(ks.Published()); got != 2 {
		t.Errorf("%d published versions, want 2", got)
	}
	if r.snap.load() != stored || changes.Load() != before {
		t.Fatal("reading the key set stored a snapshot or reported a change")
	}

	c.Advance(testSchedule.RetireAfter)
	if got := ks.Published(); len(got) != 1 || got[0].Kid != created.Kid {
		t.Errorf("after retire_after %d versions are published, want only %s", len(got), created.Kid)
	}
	ks.Tick(context.Background(), r)
	if r.snap.load() == stored || changes.Load() == before {
		t.Error("a tick did not install the re-derived snapshot")
	}
	if s := r.snap.load(); s.versions[0].State != StateRetired || s.active.Kid != created.Kid {
		t.Errorf("installed snapshot: first version %v, active %s", s.versions[0].State, s.active.Kid)
	}
}

// signal is a channel and a hook that sends on it without blocking.
func signal() (chan struct{}, func()) {
	ch := make(chan struct{}, 16)
	return ch, func() {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// runAcross empties ch, runs ks's Run loop until the test ends, moves the
// clock by d and reports whether ch gets a signal within 30 s: with
// refresh_interval a minute, only a boundary of the clock passed makes it.
func runAcross(t *testing.T, ks *KeySet, c *clocktest.Clock, d time.Duration, ch chan struct{}) bool {
	t.Helper()
	for len(ch) > 0 {
		<-ch
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { ks.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	c.Advance(d)
	select {
	case <-ch:
		return true
	case <-time.After(30 * time.Second):
		return false
	}
}

// The Run loop re-derives the stored snapshot when the clock passes a
// boundary, without waiting for the next refresh.
func TestRunWakesAtABoundary(t *testing.T) {
	changed, onChange := signal()
	ks, r, c := newKeySet(t, onChange)
	if _, _, _, err := ks.Rotate(context.Background(), r, false, ""); err != nil {
		t.Fatal(err)
	}
	// Move the clock to just before the new version matures, so the loop's
	// timer for that boundary fires (nearly) at once in real time.
	c.Advance(testSchedule.PublishAhead - time.Millisecond)
	if !runAcross(t, ks, c, time.Millisecond, changed) {
		t.Fatal("the Run loop did not re-derive the key set at the boundary")
	}
	if s := r.snap.load(); s.active == nil || s.active.ID != s.versions[1].ID {
		t.Error("the installed snapshot does not have the matured version active")
	}
}

// Whether a ring can sign changes at a boundary of the clock too: an
// emergency rotation's version starts signing once every replica publishes
// it. The Run loop's re-derivation at that boundary tells OnHealth, so the
// gRPC health of SignerService does not stay NOT_SERVING until some other
// change.
func TestHealthFollowsABoundary(t *testing.T) {
	c := clocktest.New()
	health, onHealth := signal()
	ks, err := New(context.Background(), []RingSpec{{Name: "r", Algorithm: backends.ES256, Schedule: testSchedule, Backend: openLocal(t, c)}},
		Options{Now: c.Now, OnHealth: onHealth})
	if err != nil {
		t.Fatal(err)
	}
	r := ks.Ring("r")
	if _, _, _, err := ks.Rotate(context.Background(), r, true, ""); err != nil {
		t.Fatal(err)
	}
	if len(health) == 0 || len(ks.SigningProblems()) == 0 {
		t.Fatalf("after an emergency rotation: %d health changes, problems %v; want the ring unable to sign, and told", len(health), ks.SigningProblems())
	}
	c.Advance(testSchedule.EmergencyDelay() - time.Millisecond)
	if !runAcross(t, ks, c, time.Millisecond, health) {
		t.Fatal("OnHealth was not called when the emergency version started signing")
	}
	if p := ks.SigningProblems(); len(p) != 0 {
		t.Errorf("signing problems %v once the emergency version signs", p)
	}
	// Installs that leave the ring signing tell OnHealth nothing.
	for len(health) > 0 {
		<-health
	}
	if err := ks.Refresh(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := ks.Rotate(context.Background(), r, false, ""); err != nil {
		t.Fatal(err)
	}
	if n := len(health); n != 0 {
		t.Errorf("%d OnHealth calls for a read and a rotation that left the ring signing; want none", n)
	}
}

// swapper is a backend whose key can be replaced behind Signet's back: it
// signs with another store's key of the same version id, or lists another
// public key for it.
type swapper struct {
	backends.Signer
	other          backends.Signer
	signs, changes atomic.Bool
}

func (s *swapper) Sign(ctx context.Context, r backends.KeyRing, id string, in []byte) ([]byte, error) {
	if s.signs.Load() {
		return s.other.Sign(ctx, r, id, in)
	}
	return s.Signer.Sign(ctx, r, id, in)
}

func (s *swapper) Versions(ctx context.Context, r backends.KeyRing) ([]backends.Version, error) {
	if s.changes.Load() {
		return s.other.Versions(ctx, r)
	}
	return s.Signer.Versions(ctx, r)
}

// openLocal opens a local store in a temporary directory on clock c.
func openLocal(t *testing.T, c *clocktest.Clock) backends.Signer {
	t.Helper()
	return openLocalDir(t, t.TempDir(), c)
}

// A backend that signs with another key than the one published fails the
// Sign, says so in SigningProblems and the hooks, and is trusted again once
// its signatures verify; a version whose public key changes in the backend
// is refused and the published key set stays as it was.
func TestKeyMismatch(t *testing.T) {
	c := clocktest.New()
	other := openLocal(t, c)
	ring := backends.KeyRing{Name: "r", Algorithm: backends.ES256}
	if _, err := other.CreateVersion(context.Background(), ring, ""); err != nil {
		t.Fatal(err)
	}
	b := &swapper{Signer: openLocal(t, c), other: other}
	var mismatches, health atomic.Int32
	ks, err := New(context.Background(), []RingSpec{{Name: "r", Algorithm: backends.ES256, Schedule: testSchedule, Backend: b,
		VerifySignatures: true}}, Options{Now: c.Now, OnKeyMismatch: func(string) { mismatches.Add(1) }, OnHealth: func() { health.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	r := ks.Ring("r")
	v, _ := ks.Active(r)
	input := []byte("eyJhbGciOiJFUzI1NiJ9.e30")
	if _, err := ks.SignWith(context.Background(), r, v, input); err != nil {
		t.Fatalf("an honest backend: %v", err)
	}

	b.signs.Store(true)
	if _, err := ks.SignWith(context.Background(), r, v, input); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Fatalf("a signature from another key: %v", err)
	}
	if p := ks.SigningProblems(); len(p) != 1 || !strings.Contains(p[0], "key mismatch") || mismatches.Load() != 1 || health.Load() != 1 {
		t.Errorf("problems %v, %d mismatches, %d health changes", p, mismatches.Load(), health.Load())
	}
	b.signs.Store(false)
	if _, err := ks.SignWith(context.Background(), r, v, input); err != nil || len(ks.SigningProblems()) != 0 || health.Load() != 2 {
		t.Errorf("honest again: %v, problems %v, %d health changes", err, ks.SigningProblems(), health.Load())
	}

	published := ks.Published()
	b.changes.Store(true)
	if err := ks.Refresh(context.Background(), r); err == nil || !strings.Contains(err.Error(), "another public key") {
		t.Fatalf("a read with a changed key: %v", err)
	}
	if now := ks.Published(); len(now) != 1 || now[0].Kid != published[0].Kid {
		t.Errorf("published %v after the key changed, want %s as before", now, published[0].Kid)
	}
	if p := ks.SigningProblems(); len(p) != 1 || mismatches.Load() != 2 {
		t.Errorf("problems %v, %d mismatches", p, mismatches.Load())
	}
	b.changes.Store(false)
	if err := ks.Refresh(context.Background(), r); err != nil || len(ks.SigningProblems()) != 0 {
		t.Errorf("the original key back: %v, %v", err, ks.SigningProblems())
	}
}

// An emergency rotation (revoke_previous) whose replica dies after creating
// the new version and disabling some, not all, of the older ones: nothing
// says the revocation is done (the caller got no answer, and ListKeys shows
// the older versions still enabled), and the retry of the same request
// finishes it, disabling every version but the one it creates. Signet
// records no revocation intent in the backend: the retry is the recovery.
func TestInterruptedRevocationIsFinishedByTheRetry(t *testing.T) {
	dir := t.TempDir()
	kek := func(string) string { return "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=" }
	clock := clocktest.New()
	replica := func() (*KeySet, *Ring) {
		store, err := local.Open(dir, backends.OpenOptions{Now: clock.Now, Getenv: kek})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { store.Close() })
		ks, err := New(context.Background(), []RingSpec{{Name: "r", Algorithm: backends.ES256, Schedule: testSchedule, Backend: store}}, Options{Now: clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		return ks, ks.Ring("r")
	}
	ks1, r1 := replica()
	if _, _, _, err := ks1.Rotate(context.Background(), r1, false, ""); err != nil {
		t.Fatal(err)
	}
	// The emergency rotation dies once an older version is disabled: its
	// disabling calls run in parallel, and every one stops at its next step.
	crashed, release, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var dead atomic.Bool
	var crash sync.Once
	ctx := backends.WithStepHook(context.Background(), func(step string) {
		if step == "rename over version file" || dead.Load() {
			dead.Store(true)
			crash.Do(func() { close(crashed) })
			<-release
			runtime.Goexit()
		}
	})
	go func() {
		defer close(done)
		ks1.Rotate(ctx, r1, true, "")
	}()
	t.Cleanup(func() { close(release); <-done })
	<-crashed

	ks2, r2 := replica()
	vs := ks2.Versions(r2)
	if len(vs) != 3 || !vs[0].Disabled && !vs[1].Disabled || vs[2].Disabled {
		t.Fatalf("after the crash: %d versions, disabled %v; want 3: one or both older ones revoked, the new one enabled", len(vs), disabledFlags(vs))
	}
	crashedVersion := vs[2].ID
	created, revoked, _, err := ks2.Rotate(context.Background(), r2, true, "")
	if err != nil {
		t.Fatalf("retrying the emergency rotation: %v", err)
	}
	vs = ks2.Versions(r2)
	for _, v := range vs {
		if v.Disabled != (v.ID != created.ID) {
			t.Errorf("after the retry, version %s disabled=%v (created %s)", v.ID, v.Disabled, created.ID)
		}
	}
	// The retry revoked the crashed rotation's version, and whichever
	// older one the crash left enabled (a disabling call may still finish
	// after the crash was seen: the crash stops each at its next step).
	if len(vs) != 4 || len(revoked) == 0 || len(revoked) > 3 || revoked[len(revoked)-1].ID != crashedVersion {
		t.Errorf("after the retry: %d versions, revoked by it %v; want 4, and the crashed rotation's version %s revoked last", len(vs), revoked, crashedVersion)
	}
	// The emergency version signs once every replica has had time to
	// publish it.
	if a, err := ks2.Active(r2); err == nil || backends.KindOf(err) != backends.KindUnavailable {
		t.Errorf("right after the retry the active version is %v (%v), want Unavailable", a, err)
	}
	clock.Advance(testSchedule.EmergencyDelay())
	if a, err := ks2.Active(r2); err != nil || a.ID != created.ID {
		t.Errorf("after the emergency delay the active version is %v (%v), want %s", a, err, created.ID)
	}
}

// TestSignWithAVersionRevokedElsewhere: a replica that has not refreshed
// since another revoked its active version gets a refusal from the backend
// (Vault refuses to sign below min_encryption_version); it re-reads the
// versions at once and answers Unavailable (retry), instead of
// FailedPrecondition on every Sign until its next refresh.
func TestSignWithAVersionRevokedElsewhere(t *testing.T) {
	srv := vaulttest.Start(t)
	u, err := url.Parse("vault://" + strings.TrimPrefix(srv.Addr, "http://") + "/transit?scheme=http")
	if err != nil {
		t.Fatal(err)
	}
	replica := func() (*KeySet, *Ring) {
		store, err := vault.Open(context.Background(), u, backends.OpenOptions{
			Getenv: func(k string) string { return map[string]string{"VAULT_TOKEN": vaulttest.RootToken}[k] }})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { store.Close() })
		ks, err := New(context.Background(), []RingSpec{{Name: "r", Algorithm: backends.ES256, Schedule: testSchedule, Backend: store}}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		return ks, ks.Ring("r")
	}
	ks1, r1 := replica()
	ks2, r2 := replica()
	old, err := ks2.Active(r2)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := ks1.Rotate(context.Background(), r1, true, ""); err != nil {
		t.Fatal(err)
	}
	_, err = ks2.SignWith(context.Background(), r2, old, []byte("eyJhbGciOiJFUzI1NiJ9.e30"))
	if backends.KindOf(err) != backends.KindUnavailable {
		t.Fatalf("signing with a version revoked elsewhere: %v, want Unavailable", err)
	}
	if v := find(ks2.Versions(r2), old.ID); v == nil || !v.Disabled {
		t.Errorf("after the refusal the replica still holds version %s as enabled", old.ID)
	}
}

func disabledFlags(vs []*Version) []bool {
	var out []bool
	for _, v := range vs {
		out = append(out, v.Disabled)
	}
	return out
}

// A ring whose existing keys can do more than sign (here: a local key file
// others may read) stops startup with the backend's finding and the way to
// opt out; a ring that opts out starts and logs the finding.
func TestBroadKeyUsageStopsStartupUnlessAllowed(t *testing.T) {
	dir := t.TempDir()
	kek := func(string) string { return "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=" }
	store, err := local.Open(dir, backends.OpenOptions{Getenv: kek})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	spec := RingSpec{Name: "r", Algorithm: backends.ES256, Schedule: testSchedule, Backend: store}
	if _, err := New(context.Background(), []RingSpec{spec}, Options{}); err != nil {
		t.Fatalf("a ring whose keys Signet made: %v", err)
	}
	keyFile := filepath.Join(dir, "rings", "r", "1.json")
	if err := os.Chmod(keyFile, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = New(context.Background(), []RingSpec{spec}, Options{})
	if err == nil || !strings.Contains(err.Error(), keyFile+" has mode 0644") || !strings.Contains(err.Error(), "allow_broad_key_usage") {
		t.Fatalf("a key file others may read: %v; want a refusal naming the file, its mode and the opt-out", err)
	}
	var logged strings.Builder
	spec.AllowBroadKeyUsage = true
	if _, err := New(context.Background(), []RingSpec{spec}, Options{Logger: slog.New(slog.NewTextHandler(&logged, nil))}); err != nil {
		t.Fatalf("with allow_broad_key_usage: %v", err)
	}
	if !strings.Contains(logged.String(), "level=WARN") || !strings.Contains(logged.String(), "0644") {
		t.Errorf("allowed, but not logged as a warning:\n%s", logged.String())
	}
}

// A version that signs (or signed tokens still valid) disappearing from
// the backend is refused like a replaced key: the key set stays and the
// ring reports a mismatch. A pending version that disappears (it never
// signed: the loser of a race for a version number, say) is just dropped.
func TestActiveVersionVanishingIsAKeyMismatch(t *testing.T) {
	dir := t.TempDir()
	c := clocktest.New()
	store := openLocalDir(t, dir, c)
	var mismatches atomic.Int32
	ks, err := New(context.Background(), []RingSpec{{Name: "r", Algorithm: backends.ES256, Schedule: testSchedule, Backend: store}},
		Options{Now: c.Now, OnKeyMismatch: func(string) { mismatches.Add(1) }})
	if err != nil {
		t.Fatal(err)
	}
	r := ks.Ring("r")
	pending, _, _, err := ks.Rotate(context.Background(), r, false, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "rings", "r", pending.ID+".json")); err != nil {
		t.Fatal(err)
	}
	if err := ks.Refresh(context.Background(), r); err != nil || len(ks.Versions(r)) != 1 || mismatches.Load() != 0 {
		t.Fatalf("a pending version removed: %v, %d versions, %d mismatches; want it dropped quietly", err, len(ks.Versions(r)), mismatches.Load())
	}
	active, _ := ks.Active(r)
	if err := os.Remove(filepath.Join(dir, "rings", "r", active.ID+".json")); err != nil {
		t.Fatal(err)
	}
	err = ks.Refresh(context.Background(), r)
	if backends.KindOf(err) != backends.KindFailedPrecondition || !strings.Contains(err.Error(), "no longer listed") {
		t.Fatalf("the active version removed: %v", err)
	}
	if v, _ := ks.Active(r); v == nil || v.Kid != active.Kid || mismatches.Load() != 1 || len(ks.SigningProblems()) != 1 {
		t.Errorf("after the refusal: active %v, %d mismatches, problems %v", v, mismatches.Load(), ks.SigningProblems())
	}
}

// hideRequestIDs is a backend that cannot record request ids (as Vault
// Transit): only the Signer methods of the store it wraps show.
type hideRequestIDs struct{ backends.Signer }

// A backend that cannot record a Rotate's request id gets the in-replica
// window: a retry on the same key set within RequestWindow returns the
// first version; after the window, or on another key set, it creates one.
func TestRotateRequestIDWindow(t *testing.T) {
	c := clocktest.New()
	dir := t.TempDir()
	open := func() (*KeySet, *Ring) {
		ks, err := New(context.Background(), []RingSpec{{Name: "r", Algorithm: backends.ES256, Schedule: testSchedule,
			Backend: hideRequestIDs{openLocalDir(t, dir, c)}}}, Options{Now: c.Now})
		if err != nil {
			t.Fatal(err)
		}
		return ks, ks.Ring("r")
	}
	ks, r := open()
	const id = "0f8b8c1e-3b7a-4d2e-9f1a-6c5d4e3b2a19"
	first, _, replayed, err := ks.Rotate(context.Background(), r, false, id)
	if err != nil || replayed {
		t.Fatalf("first Rotate: replayed %v, %v", replayed, err)
	}
	if first.RequestID != "" {
		t.Fatalf("the backend recorded request id %q although it cannot", first.RequestID)
	}
	c.Advance(RequestWindow - time.Second)
	again, _, replayed, err := ks.Rotate(context.Background(), r, false, id)
	if err != nil || !replayed || again.ID != first.ID {
		t.Fatalf("retry within the window: version %s (first %s), replayed %v, %v", again.ID, first.ID, replayed, err)
	}
	other, or := open()
	elsewhere, _, replayed, err := other.Rotate(context.Background(), or, false, id)
	if err != nil || replayed || elsewhere.ID == first.ID {
		t.Fatalf("retry on another key set: version %s, replayed %v, %v; want a new version (the documented limit)", elsewhere.ID, replayed, err)
	}
	c.Advance(2 * time.Second)
	late, _, replayed, err := ks.Rotate(context.Background(), r, false, id)
	if err != nil || replayed || late.ID == first.ID {
		t.Fatalf("retry after the window: version %s, replayed %v, %v; want a new version", late.ID, replayed, err)
	}
	if n := len(ks.Versions(r)); n != 4 {
		t.Errorf("%d versions, want 4", n)
	}
}

// An emergency rotation with a request id that died half-way through its
// revocations is finished by its retry on another replica: the retry
// creates nothing, disables what is left, and reports every older version
// as revoked.
func TestRetriedEmergencyRotationWithRequestID(t *testing.T) {
	dir := t.TempDir()
	kek := func(string) string { return "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=" }
	replica := func() (*KeySet, *Ring) {
		store, err := local.Open(dir, backends.OpenOptions{Getenv: kek})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { store.Close() })
		ks, err := New(context.Background(), []RingSpec{{Name: "r", Algorithm: backends.ES256, Schedule: testSchedule, Backend: store}}, Options{})
		if err != nil {
			t.Fatal(err)
		}
		return ks, ks.Ring("r")
	}
	ks1, r1 := replica()
	if _, _, _, err := ks1.Rotate(context.Background(), r1, false, ""); err != nil {
		t.Fatal(err)
	}
	const id = "5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b"
	// The disabling calls run in parallel: the crash stops every one at
	// its next step once one version is disabled.
	crashed, release, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var dead atomic.Bool
	var crash sync.Once
	ctx := backends.WithStepHook(context.Background(), func(step string) {
		if step == "rename over version file" || dead.Load() {
			dead.Store(true)
			crash.Do(func() { close(crashed) })
			<-release
			runtime.Goexit()
		}
	})
	go func() {
		defer close(done)
		ks1.Rotate(ctx, r1, true, id)
	}()
	t.Cleanup(func() { close(release); <-done })
	<-crashed

	ks2, r2 := replica()
	vs := ks2.Versions(r2)
	if len(vs) != 3 || !vs[0].Disabled && !vs[1].Disabled || vs[2].Disabled || vs[2].RequestID != id {
		t.Fatalf("after the crash: %d versions, disabled %v; want 3: one or both older ones revoked, and the new one with the request id", len(vs), disabledFlags(vs))
	}
	created, revoked, replayed, err := ks2.Rotate(context.Background(), r2, true, id)
	if err != nil || !replayed {
		t.Fatalf("retrying the emergency rotation: replayed %v, %v", replayed, err)
	}
	if created.ID != vs[2].ID || len(revoked) != 2 {
		t.Errorf("the retry returned version %s and %d revoked; want %s and 2", created.ID, len(revoked), vs[2].ID)
	}
	vs = ks2.Versions(r2)
	if len(vs) != 3 {
		t.Fatalf("the retry created a version: %d versions", len(vs))
	}
	for _, v := range vs {
		if v.Disabled != (v.ID != created.ID) {
			t.Errorf("after the retry, version %s disabled=%v (created %s)", v.ID, v.Disabled, created.ID)
		}
	}
}
