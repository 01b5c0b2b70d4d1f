package backends

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Crash safety. A CreateVersion or DisableVersion is several calls to the
// backend; the process may die between any two of them (SIGKILL, OOM, a node
// lost). The contract every backend keeps (see Signer):
//
//   - After a crash at any point of CreateVersion or DisableVersion, a live
//     replica converges, with no operator action, to a state where every
//     object Signet created in the backend is either a published version of
//     its ring or removed (or, where the backend cannot remove at once,
//     scheduled for removal). "Converges" means within
//     2 × backend_timeout + 2 × refresh_interval of the crash, by any live
//     replica, without waiting for another restart or rotation: the clean-up
//     runs in Versions, which every replica calls every refresh_interval.
//   - Each CreateVersion yields at most one version.
//   - Nothing a live replica is still creating is touched: evidence of an
//     interrupted operation (an intent marker, a temporary file, an
//     incomplete or duplicate key) is acted on only once the replica has
//     seen it for longer than OpenOptions.RecoveryGrace, which the server
//     sets to 2 × backend_timeout (a call is bounded by backend_timeout, and
//     the clean-up of its own failure by as much again).
//   - Each clean-up is logged at warn naming the object and reported to
//     OpenOptions.OnRecover; LeftoverLister lists what is left meanwhile.
//   - A replica cleans up after its own failed or lost create at once, on
//     OpenOptions.Detached, whose bound (half the grace) ends before any
//     other replica may act on the same evidence.
//
// The same holds for PutCertificates (CertificateStore) where storing a
// chain takes several calls (a local temporary file and its link, one
// PKCS#11 object per certificate): after a crash the version has the whole
// chain or none, and what a writer left half-way is a leftover, removed
// once seen for longer than the grace.
//
// Step boundaries. A backend calls Step(ctx, name) right after each backend
// call of CreateVersion, DisableVersion, DisableVersionsBefore
// (PrefixDisabler) and a multi-call PutCertificates returns. In production the
// context carries no hook and Step does nothing but look it up; the
// conformance suite (backends/signertest) installs one with WithStepHook to
// stop the operation there as a crash would, and to stop one replica's
// rotation there while another rotates (the race cases), so each boundary
// a backend declares is a crash case and three race cases by itself.

type stepHookKey struct{}

// WithStepHook returns a context whose Step calls run hook with the step's
// name. Tests only.
func WithStepHook(ctx context.Context, hook func(step string)) context.Context {
	return context.WithValue(ctx, stepHookKey{}, hook)
}

// Step marks a step boundary of a multi-call operation: the backend call
// named has just returned. See the package's crash-safety notes.
func Step(ctx context.Context, step string) {
	if hook, ok := ctx.Value(stepHookKey{}).(func(string)); ok {
		hook(step)
	}
}

// What a backend did to an object left by an interrupted operation, as
// reported to OpenOptions.OnRecover.
const (
	RecoveredRemoved           = "removed"            // deleted at once
	RecoveredScheduledDeletion = "scheduled_deletion" // the backend deletes it after a waiting period (AWS KMS)
	RecoveredAdopted           = "adopted"            // made the version it was created to be
	RecoveredDisabled          = "disabled"           // disabled, where the backend cannot delete a version (Azure Key Vault)
)

// Recovered logs at warn what a backend did to an object left by an
// interrupted operation, and reports it to opts.OnRecover.
func (opts OpenOptions) Recovered(backend, action, object, why string) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log.Warn("backend: cleaned up after an interrupted operation", "backend", backend, "action", action,
		"object", object, "why", why)
	if opts.OnRecover != nil {
		opts.OnRecover(action)
	}
}

// Grace is opts.RecoveryGrace, or its default.
func (opts OpenOptions) Grace() time.Duration {
	if opts.RecoveryGrace > 0 {
		return opts.RecoveryGrace
	}
	return DefaultRecoveryGrace
}

// Detached returns the context for the clean-up a creating operation does
// after its create failed or its answer was lost (reading what the create
// did, removing or releasing what it made): it keeps ctx's values but not
// its cancellation, since the caller's deadline passing is one way an
// answer gets lost, and it ends after half the grace, the backend_timeout
// the grace allows for it. Every backend uses this one rule (Rotate applies
// it to Resolve, Abandon and Release), so that a replica's own clean-up is
// over before any other replica may act on the evidence it leaves.
func (opts OpenOptions) Detached(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), opts.Grace()/2)
}

// DefaultRecoveryGrace is the grace of a backend opened without one: twice
// the server's default backend_timeout.
const DefaultRecoveryGrace = 2 * DefaultTimeout

// Clock is opts.Now, or time.Now.
func (opts OpenOptions) Clock() func() time.Time {
	if opts.Now != nil {
		return opts.Now
	}
	return time.Now
}

// Sightings remembers when this process first saw each piece of evidence of
// an interrupted operation, so that it acts on it only after the grace has
// passed on its own clock, whatever the clocks of other hosts say.
type Sightings struct {
	mu   sync.Mutex
	seen map[string]time.Time
}

// Stale records key as seen at now (if it was not already) and reports
// whether it was first seen more than grace before now.
func (s *Sightings) Stale(key string, now time.Time, grace time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen == nil {
		s.seen = map[string]time.Time{}
	}
	first, ok := s.seen[key]
	if !ok {
		s.seen[key] = now
		return false
	}
	return now.Sub(first) > grace
}

// Forget drops a key once its evidence is gone.
func (s *Sightings) Forget(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.seen, key)
}

// Reap is the one rule for acting on a piece of evidence of an interrupted
// operation (key names it in seen): nothing happens until this process
// has seen it for longer than the grace; then act cleans up, and on success
// the evidence is forgotten and the clean-up logged and reported
// (Recovered). It reports whether act ran and succeeded; act's error is
// returned for the caller to log or return, and the next refresh tries
// again.
func (opts OpenOptions) Reap(seen *Sightings, key string, act func() error, backend, action, object, why string) (bool, error) {
	if !seen.Stale(key, opts.Clock()(), opts.Grace()) {
		return false, nil
	}
	if err := act(); err != nil {
		return false, err
	}
	seen.Forget(key)
	opts.Recovered(backend, action, object, why)
	return true, nil
}

// Leftover is an object a backend holds for a ring that is not a version:
// what an interrupted operation left and a live replica has not cleaned up
// yet, or what is waiting for the backend to delete it.
type Leftover struct {
	// ID names the object in the backend: a KMS key ARN or alias, a file, a
	// PKCS#11 CKA_ID.
	ID string
	// Kind says what it is, e.g. "key not reached by a version alias".
	Kind string
	// State is what happens to it: "awaiting clean-up" (a live replica
	// removes it once its grace has passed), "scheduled for deletion", ...
	State string
	// Created is when the backend says it was created; zero if unknown.
	Created time.Time
}

// LeftoverLister is implemented by backends that can list what they hold
// for a ring besides its versions (`signet keys --leftovers`). It is
// optional: the server answers FailedPrecondition for a backend without it.
type LeftoverLister interface {
	Leftovers(ctx context.Context, ring KeyRing) ([]Leftover, error)
}
