package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/signet-dev/signet/backends"
	"github.com/signet-dev/signet/server/x5c"
)

// KeySet holds every key ring's versions as last read from its backend and
// derives their lifecycle states. It never stores a state: any number of
// replicas reading the same backend agree, and a restart loses nothing.
//
// Reads never write: Active, Versions and Published derive states for the
// current instant from the stored snapshot when the clock has passed one of
// its boundaries, without storing anything. Only Refresh, Rotate and the Run
// loop (which wakes at every boundary) install snapshots.
type KeySet struct {
	log            *slog.Logger
	now            func() time.Time
	backendTimeout time.Duration
	onChange       func()
	onHealth       func()
	onMismatch     func(ring string)
	onCert         func(ring, reason string)
	rings          []*Ring // config order
	byName         map[string]*Ring
	kidsMu         sync.Mutex // serialises checkKidsUnique and install across rings
}

// Ring is one key ring: its backend, its schedule and its current snapshot.
type Ring struct {
	Name     string
	Schedule Schedule
	key      backends.KeyRing
	backend  backends.Signer

	mu     sync.Mutex // serialises snapshot writes
	rotate sync.Mutex // one rotation (manual or scheduled) per ring at a time in this process
	// requests remembers, for RequestWindow, which version each Rotate
	// request id created in this process (guarded by rotate): the retry
	// guarantee of backends that do not record ids (RequestRecorder).
	requests map[string]request
	snap     atomic.Pointer[snapshot]
	reads    atomic.Uint64 // numbers backend reads, so an older read never replaces a newer one
	wake     chan struct{} // tells the Run loop that the snapshot (and its next boundary) changed

	lastRefresh atomic.Int64                 // unix nanoseconds of the last successful read
	failures    atomic.Int32                 // consecutive failed reads
	lastErr     atomic.Pointer[backendError] // the last failed read; nil after a good one
	down        atomic.Pointer[backendError] // the backend did not answer; nil once a call succeeds
	// badSignature is set by a signature that did not verify with its
	// version's public key, until one does; keyChanged by a read in which a
	// version's public key changed, until a read in which none has.
	badSignature atomic.Pointer[backendError]
	keyChanged   atomic.Pointer[backendError]
	verify       bool // check every signature before a token leaves

	ca     bool      // usage: ca: issues certificates, never signs tokens, never published
	cert   *CertSpec // nil: no certificates
	certs  certState
	certMu sync.Mutex // serialises certify
}

// IsCA reports whether the ring is a CA ring (usage: ca).
func (r *Ring) IsCA() bool { return r.ca }

// Certificates is the ring's x5c configuration; nil without one.
func (r *Ring) Certificates() *CertSpec { return r.cert }

// Algorithm is the ring's signing algorithm.
func (r *Ring) Algorithm() backends.Algorithm { return r.key.Algorithm }

type backendError struct {
	at  time.Time
	err error
}

// snapshot is a ring's versions at one read of the backend, with their
// states derived at one instant. It is immutable once stored.
type snapshot struct {
	versions []*Version // oldest first
	active   *Version   // nil: nothing can sign
	next     time.Time  // when a state changes by the clock alone; zero: never
	read     uint64     // which read of the backend
}

// Version is a backend version with what Signet derives from it: its kid
// and its lifecycle state at one instant.
type Version struct {
	backends.Version
	Kid string
	Lifecycle
	// Chain is the version's valid certificate chain (rings with x5c);
	// nil with none, and then CertProblem says why.
	Chain       x5c.Chain
	CertProblem string
	// Withheld: the ring requires a chain (or the stored one is for another
	// key) and this version has no valid one: it is neither published nor
	// signs, whatever its state says.
	Withheld     bool
	certWrongKey bool
}

// Options configures New.
type Options struct {
	Logger         *slog.Logger
	Now            func() time.Time // nil: time.Now
	BackendTimeout time.Duration    // bounds every backend call; 0: 5s
	// OnChange, if set, is called after any stored snapshot changed (a
	// refresh, a rotation, a boundary passed), with no lock held.
	OnChange func()
	// OnHealth, if set, is called when whether a ring can sign changes:
	// its backend stops answering (a call failed as unavailable) or answers
	// again (a call succeeded), it has no version to sign with, or its
	// backend's key no longer matches what it published.
	OnHealth func()
	// OnKeyMismatch, if set, is told of every signature that did not
	// verify with its version's public key, and every version whose public
	// key changed in the backend.
	OnKeyMismatch func(ring string)
	// OnCertificateProblem, if set, is told of each failed attempt to
	// obtain a version's certificate chain, with the reason (see
	// CertProblem).
	OnCertificateProblem func(ring, reason string)
}

// RingSpec is what New needs to know of a ring.
type RingSpec struct {
	Name      string
	Algorithm backends.Algorithm
	Schedule  Schedule
	Backend   backends.Signer
	// VerifySignatures checks each signature the backend returns against
	// the version's public key before a token leaves, so that a backend
	// signing with another key than the one published (a key re-created
	// under the same name, an alias pointed elsewhere, a swapped HSM
	// object, a faulty device) fails the Sign instead of issuing a token
	// no verifier accepts.
	VerifySignatures bool
	// AllowBroadKeyUsage lets the ring start although its backend reports
	// (backends.UsageChecker) that some of its keys can do more than sign;
	// the finding is logged as a warning instead.
	AllowBroadKeyUsage bool
	// CA marks a CA ring (usage: ca): its versions get self-signed CA
	// certificates (Certificates' profile), issue the certificates of the
	// rings that name it, never sign tokens and are never published.
	CA bool
	// Certificates, if set, gives each version a certificate chain, stored
	// in the backend (which must be a backends.CertificateStore).
	Certificates *CertSpec
}

// New reads every ring's versions and creates the first version of a ring
// that has none enabled. It fails if a backend cannot be read: without a key
// set there is nothing to serve.
func New(ctx context.Context, specs []RingSpec, opts Options) (*KeySet, error) {
	ks := &KeySet{log: opts.Logger, now: opts.Now, backendTimeout: opts.BackendTimeout, byName: map[string]*Ring{},
		onCert: opts.OnCertificateProblem}
	if ks.log == nil {
		ks.log = slog.New(slog.DiscardHandler)
	}
	if ks.now == nil {
		ks.now = time.Now
	}
	if ks.backendTimeout <= 0 {
		ks.backendTimeout = 5 * time.Second
	}
	for _, spec := range specs {
		if !backends.Supports(spec.Backend, spec.Algorithm) {
			return nil, fmt.Errorf("key ring %q: its backend does not support %s (it supports %v)",
				spec.Name, spec.Algorithm, spec.Backend.Algorithms())
		}
		spec.Schedule.Unpublished = spec.CA // a CA ring is never in a JWKS
		r := &Ring{Name: spec.Name, key: backends.KeyRing{Name: spec.Name, Algorithm: spec.Algorithm},
			Schedule: spec.Schedule, backend: spec.Backend, wake: make(chan struct{}, 1), verify: spec.VerifySignatures,
			ca: spec.CA, cert: spec.Certificates, requests: map[string]request{}}
		if err := ks.checkCertSpec(spec, specs); err != nil {
			return nil, err
		}
		if err := ks.Refresh(ctx, r); err != nil {
			return nil, fmt.Errorf("key ring %q: reading versions: %w", r.Name, err)
		}
		// A ring with an enabled version that does not sign yet (an
		// emergency rotation's, waiting for every replica to publish it)
		// needs no new one; nor does one whose versions are withheld for
		// want of a certificate chain.
		if newestEnabled(r.snap.Load().versions) == nil {
			v, created, err := ks.createFirst(ctx, r)
			if err != nil {
				return nil, fmt.Errorf("key ring %q: creating its first version: %w", r.Name, err)
			}
			if created {
				ks.log.Info("created the first version of a key ring", "key_ring", r.Name, "kid", v.Kid, "backend_id", v.ID)
			}
		}
		if err := ks.checkKeyUsage(ctx, r, spec.AllowBroadKeyUsage); err != nil {
			return nil, err
		}
		ks.rings = append(ks.rings, r)
		ks.byName[r.Name] = r
	}
	// Certificates once every ring is in place: CA rings first, so that
	// the rings they serve find their certificates.
	for _, ca := range []bool{true, false} {
		for _, r := range ks.rings {
			if r.ca == ca {
				ks.certify(ctx, r)
				if err := r.certs.permanent(); err != nil {
					return nil, fmt.Errorf("key ring %q: x5c: %w", r.Name, err)
				}
			}
		}
	}
	ks.onChange, ks.onHealth, ks.onMismatch = opts.OnChange, opts.OnHealth, opts.OnKeyMismatch // only once every ring is in place
	return ks, nil
}

// checkCertSpec refuses certificates on a backend that cannot store them,
// and a ca_ring that is not a CA ring of this key set.
func (ks *KeySet) checkCertSpec(spec RingSpec, specs []RingSpec) error {
	c := spec.Certificates
	if spec.CA && c == nil {
		return fmt.Errorf("key ring %q: a CA ring needs a certificate profile", spec.Name)
	}
	if c == nil {
		return nil
	}
	if _, ok := spec.Backend.(backends.CertificateStore); !ok {
		return fmt.Errorf("key ring %q: x5c: its backend cannot store certificate chains next to its keys "+
			"(local, vault, pkcs11 and awskms can); remove the x5c block or use another backend", spec.Name)
	}
	if c.Profile.Validity <= 0 || c.Profile.RenewBefore <= 0 || c.Profile.RenewBefore >= c.Profile.Validity {
		return fmt.Errorf("key ring %q: x5c: want 0 < renew_before (%v) < validity (%v)", spec.Name, c.Profile.RenewBefore, c.Profile.Validity)
	}
	if spec.CA || c.Source != SourceCARing {
		return nil
	}
	for _, o := range specs {
		if o.Name == c.CARing {
			if !o.CA {
				return fmt.Errorf("key ring %q: x5c.ca_ring %q is not a CA ring (usage: ca)", spec.Name, c.CARing)
			}
			return nil
		}
	}
	return fmt.Errorf("key ring %q: x5c.ca_ring %q is not a configured key ring", spec.Name, c.CARing)
}

// newestEnabled is the newest version of vs that is not disabled, or nil.
// Whether a ring needs a first version is decided on this alone: a version
// withheld for want of a certificate chain is still a version, and creating
// another would not obtain a chain any sooner.
func newestEnabled(vs []*Version) *Version {
	for i := len(vs) - 1; i >= 0; i-- {
		if !vs[i].Disabled {
			return vs[i]
		}
	}
	return nil
}

// createFirst creates a version of a ring that has none enabled, at
// startup. Its certificate chain, if the ring has x5c, is New's to obtain
// once every ring (its CA ring included) is read. A conflict means that another replica is creating one, or that
// the backend is still cleaning up after an interrupted creation (it says
// Conflict until the evidence is older than its recovery grace,
// 2 × backend_timeout): re-read the ring and retry, for a bounded time, and
// take the version another replica made if one appears.
func (ks *KeySet) createFirst(ctx context.Context, r *Ring) (v *Version, created bool, err error) {
	giveUp := time.Now().Add(4*ks.backendTimeout + time.Minute)
	wait := 100 * time.Millisecond
	for {
		v, err := ks.create(ctx, r, "", false)
		if backends.KindOf(err) != backends.KindConflict || time.Now().After(giveUp) {
			return v, err == nil, err
		}
		ks.log.Info("key ring has no version yet and its backend says another creation is under way or being cleaned up; retrying",
			"key_ring", r.Name, "err", err)
		select {
		case <-ctx.Done():
			return nil, false, ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, 2*time.Second)
		if err := ks.Refresh(ctx, r); err != nil {
			return nil, false, err
		}
		if v := newestEnabled(r.snap.Load().versions); v != nil {
			return v, false, nil
		}
	}
}

// checkKeyUsage asks the ring's backend, if it can tell
// (backends.UsageChecker), whether any of the ring's keys can do more than
// sign, and refuses the ring if one can, unless allowBroad.
func (ks *KeySet) checkKeyUsage(ctx context.Context, r *Ring, allowBroad bool) error {
	checker, ok := r.backend.(backends.UsageChecker)
	if !ok {
		return nil
	}
	bctx, cancel := ks.backendContext(ctx)
	err := checker.CheckKeyUsage(bctx, r.key)
	cancel()
	switch {
	case err == nil || backends.KindOf(err) == backends.KindUnimplemented:
		return nil
	case backends.KindOf(err) != backends.KindFailedPrecondition:
		return fmt.Errorf("key ring %q: checking what its keys may be used for: %w", r.Name, err)
	case allowBroad:
		ks.log.Warn("a key of the ring may do more than sign; starting anyway because the ring sets allow_broad_key_usage",
			"key_ring", r.Name, "err", err)
		return nil
	}
	return fmt.Errorf("%w (to start anyway, set allow_broad_key_usage: true on key ring %q)", err, r.Name)
}

// Leftovers lists what the ring's backend holds for it that is not a
// version (backends.LeftoverLister), for an operator's audit. It is bounded
// by ctx only: a backend may have to scan.
func (ks *KeySet) Leftovers(ctx context.Context, r *Ring) ([]backends.Leftover, error) {
	lister, ok := r.backend.(backends.LeftoverLister)
	if !ok {
		return nil, backends.Errorf(backends.KindUnimplemented, "", "the backend of key ring %q cannot list what it holds besides versions", r.Name)
	}
	return lister.Leftovers(ctx, r.key)
}

// Ring returns the named ring, or nil.
func (ks *KeySet) Ring(name string) *Ring { return ks.byName[name] }

// Rings returns every ring in configuration order.
func (ks *KeySet) Rings() []*Ring { return ks.rings }

// Now is the key set's clock.
func (ks *KeySet) Now() time.Time { return ks.now() }

// backendContext bounds a backend call by backend_timeout and by the
// caller's deadline less a margin, so that a hung backend is answered with
// Unavailable while the caller is still waiting rather than with the caller's
// own DeadlineExceeded.
func (ks *KeySet) backendContext(ctx context.Context) (context.Context, context.CancelFunc) {
	timeout := ks.backendTimeout
	if dl, ok := ctx.Deadline(); ok {
		remaining := time.Until(dl)
		if r := remaining - min(remaining/10, 250*time.Millisecond); r < timeout {
			timeout = r
		}
	}
	return context.WithTimeout(ctx, timeout)
}

// current returns the ring's versions with states as of now: the stored
// snapshot, or, once the clock has passed one of its boundaries, a snapshot
// derived afresh from the same versions and not stored.
func (ks *KeySet) current(r *Ring) *snapshot {
	s := r.snap.Load()
	if now := ks.now(); !s.next.IsZero() && !now.Before(s.next) {
		return derive(r, s.versions, s.read, now)
	}
	return s
}

// Refresh re-reads the ring's versions from its backend. On failure the
// last good snapshot stays in force (and the JWKS keeps being served).
func (ks *KeySet) Refresh(ctx context.Context, r *Ring) error {
	read := r.reads.Add(1)
	bctx, cancel := ks.backendContext(ctx)
	defer cancel()
	vs, err := r.backend.Versions(bctx, r.key)
	ks.observe(r, err)
	if err == nil {
		err = ks.accept(bctx, r, read, vs)
	}
	if err == nil {
		return nil
	}
	r.lastErr.Store(&backendError{at: ks.now(), err: err})
	r.failures.Add(1)
	return err
}

// accept checks a read of the ring's versions and installs it: every
// version's key is fit for the ring, no kid is held twice (in the ring or
// across rings), and nothing the ring published changed behind Signet's
// back. The check and the install happen under ks.kidsMu, so that two rings
// refreshed at once cannot each install a kid the other just took.
func (ks *KeySet) accept(ctx context.Context, r *Ring, read uint64, vs []backends.Version) error {
	converted, err := ks.newVersions(r, vs)
	if err != nil {
		return err
	}
	if err := ks.checkKeysUnchanged(ctx, r, converted); err != nil {
		return err
	}
	ks.kidsMu.Lock()
	if err := ks.checkKidsUnique(r, converted); err != nil {
		ks.kidsMu.Unlock()
		return err
	}
	hadActive := r.snap.Load() != nil && r.snap.Load().active != nil
	stored := ks.store(r, read, func(*snapshot) []*Version { return converted })
	ks.kidsMu.Unlock()
	if stored {
		ks.notify(r)
	}
	if r.keyChanged.Swap(nil) != nil && ks.onHealth != nil {
		ks.onHealth() // a read in which no published key changed: the mismatch has passed
	}
	r.lastErr.Store(nil)
	r.failures.Store(0)
	r.lastRefresh.Store(ks.now().UnixNano())
	if hasActive := r.snap.Load().active != nil; hasActive != hadActive && ks.onHealth != nil {
		ks.onHealth()
	}
	return nil
}

// checkKidsUnique refuses versions of which two share a kid, within the
// ring or with a version of another ring: a JWKS holds a kid once, so one
// of them (and its alg) would be silently dropped and the other's tokens
// fail to verify; and revoking one would not revoke the key the other
// still signs with. A real KMS never generates one key twice, but an
// operator can import one (PKCS#11 objects, Transit imports) or point two
// rings at the same key. A revoked version is compared too when its kid is
// known: its key signing on in another ring would make the revocation
// void. Versions whose kid is unknown (revoked, key unreadable) are not
// compared. Called with ks.kidsMu held.
func (ks *KeySet) checkKidsUnique(r *Ring, vs []*Version) error {
	seen := map[string]*Version{}
	for _, v := range vs {
		if v.Kid == "" {
			continue
		}
		if o := seen[v.Kid]; o != nil {
			return duplicateKid(v.Kid, r.Name, o.ID, r.Name, v.ID)
		}
		seen[v.Kid] = v
	}
	for _, other := range ks.rings {
		if other == r || other.snap.Load() == nil {
			continue
		}
		for _, o := range other.snap.Load().versions {
			if v := seen[o.Kid]; v != nil && o.Kid != "" {
				return duplicateKid(o.Kid, other.Name, o.ID, r.Name, v.ID)
			}
		}
	}
	return nil
}

// ErrDuplicateKid is in the error of Refresh and New (errors.Is) when two
// versions hold the same public key.
var ErrDuplicateKid = errors.New("two versions hold the same public key")

func duplicateKid(kid, ring1, id1, ring2, id2 string) error {
	return backends.Errorf(backends.KindFailedPrecondition, "",
		"%w (kid %s): version %s of key ring %q and version %s of key ring %q; one key must be one version: remove the copy from the backend, "+
			"or point the ring at another key (the last good key set stays in force)", ErrDuplicateKid, kid, id1, ring1, id2, ring2)
}

// checkKeysUnchanged refuses a read in which a version this ring knows
// has another public key than before, or in which a version that signs, or
// signed tokens that may still be valid (active or retiring), is missing
// while it may still sign: its kid, and the JWKS that verifiers hold, would
// silently change under tokens already issued. A missing version was
// deleted, or, on AWS KMS, its version alias re-pointed at another key,
// which lists version n under another ARN, unless the backend confirms that
// it can never sign again (backends.RemovalChecker: Cloud KMS hides
// versions scheduled for destruction, which destroy_on_revoke does on
// revocation): that is a revocation, and its kid leaves the JWKS at once.
// A revoked version whose key the backend no longer shows keeps the kid
// this ring knew it by (newVersions), so it is not a changed key. The last
// good key set stays in force and the ring reports the mismatch.
func (ks *KeySet) checkKeysUnchanged(ctx context.Context, r *Ring, vs []*Version) error {
	if r.snap.Load() == nil {
		return nil
	}
	for _, old := range ks.current(r).versions {
		v := find(vs, old.ID)
		var err error
		switch {
		case v != nil && old.Kid != "" && v.Kid != "" && old.Kid != v.Kid:
			err = backends.Errorf(backends.KindFailedPrecondition, "",
				"version %s of key ring %q has another public key in the backend than the one published (kid %s, now %s): "+
					"the key was replaced behind Signet's back; the published key set stays as it was", v.ID, r.Name, old.Kid, v.Kid)
		case v == nil && (old.State == StateActive || old.State == StateRetiring):
			removed, rerr := ks.removed(ctx, r, old)
			if rerr != nil {
				return rerr
			}
			if removed {
				ks.log.Info("a version the backend no longer lists can never sign again (removed after its revocation); its kid leaves the JWKS",
					"key_ring", r.Name, "backend_id", old.ID, "kid", old.Kid)
				continue
			}
			err = backends.Errorf(backends.KindFailedPrecondition, "",
				"version %s of key ring %q (kid %s, %s) is no longer listed by the backend: it was removed, or its alias "+
					"re-pointed at another key, behind Signet's back; the published key set stays as it was", old.ID, r.Name, old.Kid, old.State)
		}
		if err != nil {
			ks.keyMismatch(r, &r.keyChanged, err)
			return err
		}
	}
	return nil
}

// removed asks the ring's backend, if it can tell (backends.RemovalChecker),
// whether a version it no longer lists can never sign again. A failed
// question fails the read (the last good key set stays), not a mismatch.
func (ks *KeySet) removed(ctx context.Context, r *Ring, v *Version) (bool, error) {
	rc, ok := r.backend.(backends.RemovalChecker)
	if !ok {
		return false, nil
	}
	removed, err := rc.Removed(ctx, r.key, v.ID)
	ks.observe(r, err)
	return removed, err
}

// keyMismatch records in flag that the ring's backend key does not match
// what it published, logs it and tells the hooks.
func (ks *KeySet) keyMismatch(r *Ring, flag *atomic.Pointer[backendError], err error) {
	ks.log.Error("key mismatch: refusing to sign or publish what the backend now holds", "key_ring", r.Name, "err", err)
	first := flag.Swap(&backendError{at: ks.now(), err: err}) == nil
	if ks.onMismatch != nil {
		ks.onMismatch(r.Name)
	}
	if first && ks.onHealth != nil {
		ks.onHealth()
	}
}

// observe records whether a backend call reached the backend: a call that
// failed as unavailable marks the ring down at once, any call that got an
// answer marks it up.
func (ks *KeySet) observe(r *Ring, err error) {
	var changed bool
	switch {
	case err == nil || backends.KindOf(err) != backends.KindUnavailable:
		changed = r.down.Swap(nil) != nil
	default:
		changed = r.down.Swap(&backendError{at: ks.now(), err: err}) == nil
	}
	if changed && ks.onHealth != nil {
		ks.onHealth()
	}
}

// newVersions converts a read of the backend. A disabled version whose key
// the backend no longer shows (backends.Version.PublicKey nil) keeps the kid
// the ring knew it by, or none: a revoked version is never published, so
// its key is not needed; an enabled one without a key is refused.
func (ks *KeySet) newVersions(r *Ring, vs []backends.Version) ([]*Version, error) {
	out := make([]*Version, 0, len(vs))
	now := ks.now()
	var known []*Version
	if s := r.snap.Load(); s != nil {
		known = s.versions
	}
	for _, v := range vs {
		if v.Algorithm != r.key.Algorithm {
			return nil, backends.Errorf(backends.KindFailedPrecondition, "",
				"version %s of key ring %q is %s but the ring is configured for %s", v.ID, r.Name, v.Algorithm, r.key.Algorithm)
		}
		if v.PublicKey == nil && v.Disabled {
			nv := &Version{Version: v}
			if old := find(known, v.ID); old != nil {
				nv.Kid = old.Kid
			}
			out = append(out, nv)
			continue
		}
		if err := v.Algorithm.CheckPublicKey(v.PublicKey); err != nil {
			return nil, backends.Errorf(backends.KindFailedPrecondition, "", "version %s of key ring %q: %v", v.ID, r.Name, err)
		}
		kid, err := backends.KeyID(v.PublicKey)
		if err != nil {
			return nil, err
		}
		nv := &Version{Version: v, Kid: kid}
		ks.checkChain(r, nv, now)
		out = append(out, nv)
	}
	return out, nil
}

// install stores a snapshot derived now from the versions that pick returns
// (given the stored snapshot, nil at first), unless a newer backend read has
// been stored already; then it tells the Run loop and the OnChange hook.
func (ks *KeySet) install(r *Ring, read uint64, pick func(cur *snapshot) []*Version) {
	if ks.store(r, read, pick) {
		ks.notify(r)
	}
}

// store is install without telling anyone; it reports whether it stored.
func (ks *KeySet) store(r *Ring, read uint64, pick func(cur *snapshot) []*Version) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	cur := r.snap.Load()
	if cur != nil && cur.read > read {
		return false
	}
	r.snap.Store(derive(r, pick(cur), read, ks.now()))
	return true
}

// notify tells the Run loop and the OnChange hook that the ring's snapshot
// changed. No lock of the key set is held.
func (ks *KeySet) notify(r *Ring) {
	select {
	case r.wake <- struct{}{}:
	default:
	}
	if ks.onChange != nil {
		ks.onChange()
	}
}

// derive computes a snapshot of vs at now: the one place where a
// version's state, whether it is withheld, and which version signs are
// decided.
//
// States come from the schedule over every version (Derive). Then a
// version that is or may become published (pending, active, retiring) is
// withheld, neither published nor signing, if its stored chain is for
// another key, or if the ring requires a chain and it has none valid
// jwks_max_age from now (a chain that lapses sooner leaves the JWKS, or with
// x5c.required false loses its x5c, before a cached JWKS could carry it
// past its notAfter). Withholding never changes a state: when the version
// the schedule makes active is withheld, the one before it keeps signing
// only while it is retiring and not withheld itself; a retired or revoked
// version never signs or is published again.
func derive(r *Ring, vs []*Version, read uint64, now time.Time) *snapshot {
	plain := make([]backends.Version, len(vs))
	for i, v := range vs {
		plain[i] = v.Version
	}
	states, active, next := Derive(plain, r.Schedule, now)
	later := func(t time.Time) {
		if t.After(now) && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	s := &snapshot{versions: make([]*Version, len(vs)), read: read}
	for i, v := range vs {
		c := *v
		c.Lifecycle = states[i]
		if r.cert != nil && c.State.Published() {
			if c.Chain != nil {
				lapse := c.Chain.Expires().Add(-r.Schedule.JWKSMaxAge)
				if now.Before(lapse) {
					later(lapse)
				} else {
					c.Chain, c.CertProblem = nil, "its certificate chain expires at "+
						c.Chain.Expires().UTC().Format(time.RFC3339)+", within jwks_max_age, and has not been renewed"
				}
			}
			c.Withheld = c.certWrongKey || r.cert.Required && c.Chain == nil
		}
		s.versions[i] = &c
	}
	if active >= 0 && s.versions[active].Withheld {
		prev := active - 1
		for prev >= 0 && s.versions[prev].Disabled {
			prev--
		}
		active = -1
		if prev >= 0 && s.versions[prev].State == StateRetiring && !s.versions[prev].Withheld {
			active = prev
		}
	}
	if active >= 0 {
		s.active = s.versions[active]
	}
	s.next = next
	return s
}

// rederive re-derives the stored snapshot's states at the current time,
// for the Run loop when a boundary has passed.
func (ks *KeySet) rederive(r *Ring) {
	ks.install(r, r.snap.Load().read, func(cur *snapshot) []*Version { return cur.versions })
}

// create makes a new version after the newest one the ring's snapshot
// knows, recording requestID with it where the backend can (and in this
// replica's memory as soon as the backend names the version), then re-reads
// the ring. It obtains no certificate: its callers certify (New only once
// every ring is read, so that a CA ring listed later is there). Called with
// r.rotate held.
//
// It runs detached from the caller's cancellation, bounded by
// backend_timeout alone: a caller that gives up (the client timeout that
// request ids exist for) must not abort a create half-way, after the backend
// made the version but before this replica learned its id, or the retry
// could not be recognised and would create another.
func (ks *KeySet) create(ctx context.Context, r *Ring, requestID string, revokePrevious bool) (*Version, error) {
	ctx = context.WithoutCancel(ctx)
	latest := ""
	if vs := r.snap.Load().versions; len(vs) > 0 {
		latest = vs[len(vs)-1].ID
	}
	bctx, cancel := ks.backendContext(ctx)
	var (
		v   backends.Version
		err error
	)
	if rec, ok := r.backend.(backends.RequestRecorder); ok && requestID != "" {
		v, err = rec.CreateVersionForRequest(bctx, r.key, latest, requestID)
	} else {
		v, err = r.backend.CreateVersion(bctx, r.key, latest)
	}
	cancel()
	ks.observe(r, err)
	if err != nil {
		return nil, err
	}
	ks.remember(r, requestID, request{versionID: v.ID, revokePrevious: revokePrevious})
	if err := ks.Refresh(ctx, r); err != nil {
		return nil, err
	}
	if sv := find(r.snap.Load().versions, v.ID); sv != nil {
		return sv, nil
	}
	return nil, backends.Errorf(backends.KindUnavailable, "", "version %s was created but the backend does not list it", v.ID)
}

func find(vs []*Version, id string) *Version {
	for _, v := range vs {
		if v.ID == id {
			return v
		}
	}
	return nil
}

// RequestWindow is how long a replica remembers the Rotate request ids it
// served, for backends that do not record them with the version
// (backends.RequestRecorder): a retry after that, or on another replica,
// creates a new version.
const RequestWindow = 24 * time.Hour

// maxRequests bounds the remembered request ids per ring: rotations are
// rare, so this is only a guard against a caller rotating in a loop.
const maxRequests = 10000

type request struct {
	versionID      string
	revokePrevious bool // the first call's, to refuse a retry that asks otherwise
	at             time.Time
}

// ErrRequestMismatch is in the error of Rotate (errors.Is) when a request
// id is used again with another revoke_previous than the call that created
// its version: the caller is confused about which rotation it is retrying.
var ErrRequestMismatch = errors.New("request id used with another revoke_previous")

// Rotate creates a new version of the ring. With revokePrevious every older
// enabled version is disabled in the backend, so the new one signs at once
// and the old kids leave the JWKS at once. The key set reflects the rotation
// (and OnChange has run) before Rotate returns.
//
// A non-empty requestID makes Rotate idempotent (AIP-155): if a version was
// created for that id (recorded in the backend, or remembered by this
// replica for RequestWindow), Rotate creates nothing and returns it, with
// revokePrevious finishing the revocation of the versions older than it and
// returning every older version that is revoked; replayed is true.
func (ks *KeySet) Rotate(ctx context.Context, r *Ring, revokePrevious bool, requestID string) (created *Version, revoked []*Version, replayed bool, err error) {
	r.rotate.Lock()
	defer r.rotate.Unlock()
	for attempt := 0; ; attempt++ {
		if err := ks.Refresh(ctx, r); err != nil {
			return nil, nil, false, err
		}
		if created, err = ks.requested(r, requestID, revokePrevious); err != nil {
			return nil, nil, false, err
		}
		if created != nil {
			replayed = true
			break
		}
		created, err = ks.create(ctx, r, requestID, revokePrevious)
		if backends.KindOf(err) == backends.KindConflict && attempt < 3 {
			continue // another replica rotated between our read and our create
		}
		if err != nil {
			return nil, nil, false, err
		}
		ks.certify(ctx, r)
		break
	}
	if revokePrevious {
		vs := r.snap.Load().versions
		for _, v := range vs {
			if v.ID == created.ID {
				break // versions are oldest first: the rest are newer
			}
			if v.Disabled {
				if replayed {
					revoked = append(revoked, v)
				}
				continue
			}
			bctx, cancel := ks.backendContext(ctx)
			err := r.backend.DisableVersion(bctx, r.key, v.ID)
			cancel()
			ks.observe(r, err)
			if err != nil {
				_ = ks.Refresh(ctx, r) // to show what was revoked; the revocation's error is the one to return
				return created, revoked, replayed, fmt.Errorf("created version %s but revoking version %s failed (call Rotate with revoke_previous again): %w", created.ID, v.ID, err)
			}
			revoked = append(revoked, v)
		}
		if err := ks.Refresh(ctx, r); err != nil {
			return created, revoked, replayed, err
		}
		ks.certify(ctx, r) // a CA ring's new version issues from now on
	}
	// Report the versions as they stand now.
	vs := ks.current(r).versions
	for i, v := range revoked {
		if nv := find(vs, v.ID); nv != nil {
			revoked[i] = nv
		} else { // removed by its revocation (destroy_on_revoke)
			gone := *v
			gone.Disabled, gone.Lifecycle = true, Lifecycle{State: StateRevoked}
			revoked[i] = &gone
		}
	}
	if nv := find(vs, created.ID); nv != nil {
		created = nv
	}
	return created, revoked, replayed, nil
}

// requested returns the version created for requestID: the one the backend
// lists with it, or the one this replica remembers creating for it within
// RequestWindow. A remembered version the backend does not list (yet) is
// KindUnavailable, not a reason to create another; a remembered request
// with another revokePrevious is ErrRequestMismatch. (Backends that record
// the id do not record revoke_previous: a mismatch is caught only by the
// replica that served the first call.) Called with r.rotate held, after a
// Refresh.
func (ks *KeySet) requested(r *Ring, requestID string, revokePrevious bool) (*Version, error) {
	if requestID == "" {
		return nil, nil
	}
	vs := r.snap.Load().versions
	req, known := r.requests[requestID]
	known = known && ks.now().Sub(req.at) < RequestWindow
	if known && req.revokePrevious != revokePrevious {
		return nil, backends.Errorf(backends.KindInvalidArgument, "",
			"request_id %s was first used with revoke_previous=%v, now with %v: %w", requestID, req.revokePrevious, revokePrevious, ErrRequestMismatch)
	}
	for _, v := range vs {
		if v.RequestID == requestID {
			return v, nil
		}
	}
	if known {
		if v := find(vs, req.versionID); v != nil {
			return v, nil
		}
		return nil, backends.Errorf(backends.KindUnavailable, "",
			"version %s was created for this request id but the backend does not list it yet; retry", req.versionID)
	}
	return nil, nil
}

// remember notes, for RequestWindow, what requestID created, and forgets
// what has aged out. Called with r.rotate held.
func (ks *KeySet) remember(r *Ring, requestID string, req request) {
	if requestID == "" {
		return
	}
	now := ks.now()
	for id, req := range r.requests {
		if now.Sub(req.at) >= RequestWindow {
			delete(r.requests, id)
		}
	}
	if len(r.requests) >= maxRequests {
		oldest := ""
		for id, req := range r.requests {
			if oldest == "" || req.at.Before(r.requests[oldest].at) {
				oldest = id
			}
		}
		delete(r.requests, oldest)
	}
	req.at = now
	r.requests[requestID] = req
}

// Active returns the version that signs now. With none (every version
// revoked), the error is KindUnavailable and says to rotate.
func (ks *KeySet) Active(r *Ring) (*Version, error) {
	if r.ca {
		return nil, backends.Errorf(backends.KindFailedPrecondition, "",
			"key ring %q is a %w: it issues certificates and never signs tokens", r.Name, ErrCARing)
	}
	s := ks.current(r)
	if s.active != nil {
		return s.active, nil
	}
	return nil, ks.noActive(r, s)
}

// noActive says why no version of the ring signs (errors.Is
// ErrNoSigningVersion): with x5c.required, none has the chain the ring
// requires; an emergency rotation's version waits for every replica to
// publish it; or none is enabled.
func (ks *KeySet) noActive(r *Ring, s *snapshot) error {
	for _, v := range s.versions {
		if v.Withheld {
			return backends.Errorf(backends.KindUnavailable, "",
				"key ring %q has %w: none has the certificate chain it requires (x5c.required): version %s: %s",
				r.Name, ErrNoSigningVersion, v.ID, ks.certProblem(r, v))
		}
	}
	for _, v := range s.versions {
		if !v.Disabled {
			return backends.Errorf(backends.KindUnavailable, "",
				"key ring %q has %w yet: the version of the emergency rotation signs from %s, once every replica publishes it "+
					"(2 × refresh_interval after its creation); retry then", r.Name, ErrNoSigningVersion, v.ActivatesAt.UTC().Format(time.RFC3339Nano))
		}
	}
	return backends.Errorf(backends.KindUnavailable, "", "key ring %q has %w: %w; Rotate it", r.Name, ErrNoSigningVersion, ErrAllRevoked)
}

// ErrAllRevoked is in the error of Active (errors.Is) when no version signs
// because every one is revoked: only a Rotate helps, not waiting.
var ErrAllRevoked = errors.New("every version is revoked")

// ErrNoSigningVersion is in the error of Active (errors.Is) when no version
// of a ring may sign.
var ErrNoSigningVersion = errors.New("no version that may sign")

// ErrCARing is in the error of Active (errors.Is) on a CA ring.
var ErrCARing = errors.New("CA ring (usage: ca)")

// SignWith has the ring's backend sign input with version v, bounded by
// backend_timeout and ctx's deadline, and checks the signature's size.
func (ks *KeySet) SignWith(ctx context.Context, r *Ring, v *Version, input []byte) ([]byte, error) {
	bctx, cancel := ks.backendContext(ctx)
	sig, err := r.backend.Sign(bctx, r.key, v.ID, input)
	cancel()
	ks.observe(r, err)
	if backends.KindOf(err) == backends.KindFailedPrecondition && ks.revokedMeanwhile(ctx, r, v) {
		return nil, backends.Errorf(backends.KindUnavailable, "", "version %s of key ring %q was revoked by another replica after this one "+
			"last read the versions; it has read them again: retry", v.ID, r.Name)
	}
	if err != nil {
		return nil, err
	}
	if want := v.Algorithm.SignatureSize(); want != 0 && len(sig) != want {
		return nil, backends.Errorf(backends.KindUnknown, "", "backend returned a %d-byte %s signature, want %d", len(sig), v.Algorithm, want)
	}
	if r.verify {
		if err := v.Algorithm.Verify(v.PublicKey, input, sig); err != nil {
			err = backends.Errorf(backends.KindUnknown, "", "the backend signed with version %s of key ring %q but the signature "+
				"does not verify with that version's published key (kid %s): %v", v.ID, r.Name, v.Kid, err)
			ks.keyMismatch(r, &r.badSignature, err)
			return nil, err
		}
		if r.badSignature.Swap(nil) != nil && ks.onHealth != nil {
			ks.onHealth() // a verified signature again: the fault has passed
		}
	}
	return sig, nil
}

// revokedMeanwhile re-reads the ring after the backend refused to sign with
// v, and reports whether v is disabled now: another replica revoked it (an
// emergency rotation) since this one last read the versions. Without the
// re-read, this replica would go on signing with v, and failing, until its
// next refresh (the soak saw a second of FailedPrecondition answers).
func (ks *KeySet) revokedMeanwhile(ctx context.Context, r *Ring, v *Version) bool {
	if v.Disabled || ks.Refresh(ctx, r) != nil {
		return false
	}
	nv := find(ks.current(r).versions, v.ID)
	// Gone from a read that succeeded: the backend confirmed that it can
	// never sign again (checkKeysUnchanged), a revocation too.
	return nv == nil || nv.Disabled
}

// Versions returns the ring's versions with their current states, oldest
// first.
func (ks *KeySet) Versions(r *Ring) []*Version { return ks.current(r).versions }

// Published returns the versions that belong in the JWKS now, ring by ring
// in configuration order, each kid once.
func (ks *KeySet) Published() []*Version {
	var out []*Version
	seen := map[string]bool{}
	for _, r := range ks.rings {
		if r.ca {
			continue // a CA's keys sign certificates, which carry them
		}
		for _, v := range ks.current(r).versions {
			if v.State.Published() && !v.Withheld && !seen[v.Kid] {
				seen[v.Kid] = true
				out = append(out, v)
			}
		}
	}
	return out
}

// Run keeps every ring fresh until ctx ends: it re-reads versions every
// refresh_interval, performs scheduled rotation, and re-derives states when
// the clock passes a boundary.
func (ks *KeySet) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, r := range ks.rings {
		wg.Go(func() { ks.run(ctx, r) })
	}
	wg.Wait()
}

func (ks *KeySet) run(ctx context.Context, r *Ring) {
	refresh := time.NewTicker(r.Schedule.RefreshInterval)
	defer refresh.Stop()
	boundary := time.NewTimer(0)
	defer boundary.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-refresh.C:
			ks.Tick(ctx, r)
		case <-r.wake:
		case <-boundary.C:
			if s := r.snap.Load(); !s.next.IsZero() && !ks.now().Before(s.next) {
				ks.rederive(r)
			}
		}
		if next := r.snap.Load().next; !next.IsZero() {
			boundary.Reset(max(next.Sub(ks.now()), 0))
		} else {
			boundary.Stop()
		}
	}
}

// Tick is one round of the refresh loop for a ring: re-read its versions,
// then rotate if rotation_period has passed. Run calls it every
// refresh_interval; tests call it directly.
func (ks *KeySet) Tick(ctx context.Context, r *Ring) {
	if err := ks.Refresh(ctx, r); err != nil {
		if ctx.Err() == nil {
			ks.log.Warn("cannot refresh key ring; serving the last good key set", "key_ring", r.Name, "err", err)
		}
		return
	}
	ks.certify(ctx, r)
	if !ks.rotationDue(r) {
		return
	}
	r.rotate.Lock()
	defer r.rotate.Unlock()
	if !ks.rotationDue(r) {
		return
	}
	v, err := ks.create(ctx, r, "", false)
	if err == nil {
		ks.certify(ctx, r)
	}
	switch {
	case backends.KindOf(err) == backends.KindConflict:
		ks.log.Info("scheduled rotation: another replica rotated first", "key_ring", r.Name)
	case err != nil:
		ks.log.Error("scheduled rotation failed", "key_ring", r.Name, "err", err)
	default:
		ks.log.Info("scheduled rotation created a version", "key_ring", r.Name, "kid", v.Kid, "backend_id", v.ID,
			"activates_at", v.ActivatesAt)
	}
}

// rotationDue reports whether the ring's newest enabled version is older
// than rotation_period. Because the check reads the backend's versions and
// creation is conditional on the newest one, replicas create at most one
// version per period between them.
func (ks *KeySet) rotationDue(r *Ring) bool {
	next := nextRotation(r, r.snap.Load().versions)
	return !next.IsZero() && !ks.now().Before(next)
}

// nextRotation is when rotation_period has passed since the newest enabled
// version was created; zero for manual rotation or with nothing enabled.
func nextRotation(r *Ring, vs []*Version) time.Time {
	if r.Schedule.RotationPeriod <= 0 {
		return time.Time{}
	}
	for i := len(vs) - 1; i >= 0; i-- {
		if !vs[i].Disabled {
			return vs[i].Created.Add(r.Schedule.RotationPeriod)
		}
	}
	return time.Time{}
}

// SigningProblems lists why some ring cannot sign now: its backend does
// not answer, or it has no version that can sign. Empty means every ring
// can. It never concerns the JWKS, which is served from the last good key
// set whatever the backends do.
func (ks *KeySet) SigningProblems() []string {
	var why []string
	for _, r := range ks.rings {
		if cur := ks.current(r); cur.active == nil && !r.ca {
			why = append(why, ks.noActive(r, cur).Error())
		}
		if d := r.down.Load(); d != nil {
			why = append(why, fmt.Sprintf("key ring %q: backend unreachable since %s: %v", r.Name, d.at.UTC().Format(time.RFC3339), d.err))
		}
		for _, m := range []*backendError{r.badSignature.Load(), r.keyChanged.Load()} {
			if m != nil {
				why = append(why, fmt.Sprintf("key ring %q: key mismatch since %s: %v", r.Name, m.at.UTC().Format(time.RFC3339), m.err))
			}
		}
	}
	return why
}

// RingStatus is what an operator (and a metrics scrape) sees of a ring.
type RingStatus struct {
	Name     string
	Schedule Schedule
	Versions []*Version // oldest first, states as of now
	// Active is the version that signs now; nil if none can.
	Active *Version
	// LastRefresh is the time of the last successful read of the versions.
	LastRefresh time.Time
	// RefreshFailures counts the failed reads since the last good one;
	// LastError is the last failure, nil after a good read.
	RefreshFailures int
	LastError       error
	// Down is the time since which the backend has not answered (zero: it
	// answers), and DownError why.
	Down      time.Time
	DownError error
	// NextRotation is when scheduled rotation next creates a version
	// (zero: manual rotation only, or nothing enabled).
	NextRotation time.Time
	// X5C: the ring has certificate chains (x5c or a CA ring); CA: it is a
	// CA ring.
	X5C, CA bool
}

// Status returns every ring's status, in configuration order.
func (ks *KeySet) Status() []RingStatus {
	out := make([]RingStatus, 0, len(ks.rings))
	for _, r := range ks.rings {
		s := ks.current(r)
		st := RingStatus{Name: r.Name, Schedule: r.Schedule, Versions: s.versions, Active: s.active,
			RefreshFailures: int(r.failures.Load()), NextRotation: nextRotation(r, s.versions), X5C: r.cert != nil, CA: r.ca}
		if n := r.lastRefresh.Load(); n != 0 {
			st.LastRefresh = time.Unix(0, n)
		}
		if e := r.lastErr.Load(); e != nil {
			st.LastError = e.err
		}
		if d := r.down.Load(); d != nil {
			st.Down, st.DownError = d.at, d.err
		}
		out = append(out, st)
	}
	return out
}

// Algorithms lists the distinct algorithms of the configured rings.
func (ks *KeySet) Algorithms() []string {
	var algs []string
	for _, r := range ks.rings {
		if a := string(r.key.Algorithm); !slices.Contains(algs, a) {
			algs = append(algs, a)
		}
	}
	return algs
}
