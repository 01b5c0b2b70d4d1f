package lifecycle

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
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
// its boundaries, without storing anything. Only the store writes a
// snapshot: after a read of the backend (Refresh, which Rotate and Tick
// call) and when the Run loop wakes at a boundary.
type KeySet struct {
	log            *slog.Logger
	now            func() time.Time
	backendTimeout time.Duration
	hooks          hooks
	store          store
	// rings (configuration order) and byName are filled in by New and
	// never change once it returns.
	rings  []*Ring
	byName map[string]*Ring
}

// hooks are Options' callbacks, each nil if unset. onCert is set from the
// start; the others only as New's last step, so that none runs on a
// half-built key set. None changes once New returns.
type hooks struct {
	onChange   func()
	onHealth   func()
	onMismatch func(ring string)
	onCert     func(ring, reason string)
}

func (h *hooks) changed() {
	if h.onChange != nil {
		h.onChange()
	}
}

func (h *hooks) health() {
	if h.onHealth != nil {
		h.onHealth()
	}
}

func (h *hooks) mismatch(ring string) {
	if h.onMismatch != nil {
		h.onMismatch(ring)
	}
}

func (h *hooks) certProblem(ring, reason string) {
	if h.onCert != nil {
		h.onCert(ring, reason)
	}
}

// Ring is one key ring: its configuration, fixed by New, and the state
// each part of the key set keeps for it, each with one owner.
type Ring struct {
	Name     string
	Schedule Schedule
	key      backends.KeyRing
	backend  backends.Signer
	verify   bool      // check every signature before a token leaves
	ca       bool      // usage: ca: issues certificates, never signs tokens, never published
	cert     *CertSpec // nil: no certificates

	snap     slot       // the current snapshot: written by the store alone (store.go)
	reads    readLog    // how the last reads of the backend went (refresh.go)
	health   health     // what backend calls and signatures have shown (health.go)
	rotation rotation   // one rotation at a time, and the request ids served (rotation.go)
	certs    certState  // one certify at a time, and why chains are missing (certificates.go)
	start    startState // whether the ring has read its backend since the process started (startup.go)
}

// IsCA reports whether the ring is a CA ring (usage: ca).
func (r *Ring) IsCA() bool { return r.ca }

// Certificates is the ring's x5c configuration; nil without one.
func (r *Ring) Certificates() *CertSpec { return r.cert }

// Algorithm is the ring's signing algorithm.
func (r *Ring) Algorithm() backends.Algorithm { return r.key.Algorithm }

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
	// refresh, a rotation, a boundary passed).
	OnChange func()
	// OnHealth, if set, is called when whether a ring can sign changes:
	// its backend stops answering (a call failed as unavailable) or answers
	// again (a call succeeded), it has no version to sign with or has one
	// again (after a read, or at a boundary of the clock), or its backend's
	// key no longer matches what it published.
	//
	// The hooks may read the key set (no lock a read takes is held when
	// they run) but must not Rotate or Tick it: a rotation or certify of
	// the ring may be under way on the same goroutine.
	OnHealth func()
	// OnKeyMismatch, if set, is told of every signature that did not
	// verify with its version's public key, and every version whose public
	// key changed in the backend.
	OnKeyMismatch func(ring string)
	// OnCertificateProblem, if set, is told of each failed attempt to
	// obtain a version's certificate chain, with the reason (see
	// CertProblem).
	OnCertificateProblem func(ring, reason string)
	// Fallback, if set, is asked for a ring's published key set when its
	// backend does not answer at start-up (startup.go): versions an earlier
	// read listed, from a source the caller has authenticated. An error
	// says why there is none; the ring then publishes nothing until its
	// backend answers.
	Fallback func(ctx context.Context, ring string, alg backends.Algorithm) (Seed, error)
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
// that has none enabled. A ring whose backend does not answer (unavailable)
// starts from Options.Fallback's key set, or with none, and does not sign
// until its backend answers (startup.go); any other failure to read a
// backend fails New.
func New(ctx context.Context, specs []RingSpec, opts Options) (*KeySet, error) {
	ks := &KeySet{log: opts.Logger, now: opts.Now, backendTimeout: opts.BackendTimeout, byName: map[string]*Ring{}}
	if ks.log == nil {
		ks.log = slog.New(slog.DiscardHandler)
	}
	if ks.now == nil {
		ks.now = time.Now
	}
	if ks.backendTimeout <= 0 {
		ks.backendTimeout = 5 * time.Second
	}
	ks.hooks.onCert = opts.OnCertificateProblem
	ks.store.now, ks.store.hooks = ks.now, &ks.hooks
	for _, spec := range specs {
		if !backends.Supports(spec.Backend, spec.Algorithm) {
			return nil, fmt.Errorf("key ring %q: its backend does not support %s (it supports %v)",
				spec.Name, spec.Algorithm, spec.Backend.Algorithms())
		}
		spec.Schedule.Unpublished = spec.CA // a CA ring is never in a JWKS
		r := &Ring{Name: spec.Name, key: backends.KeyRing{Name: spec.Name, Algorithm: spec.Algorithm},
			Schedule: spec.Schedule, backend: spec.Backend, verify: spec.VerifySignatures,
			ca: spec.CA, cert: spec.Certificates, snap: slot{wake: make(chan struct{}, 1)}}
		if err := checkCertSpec(spec, specs); err != nil {
			return nil, err
		}
		ks.store.add(r)
		r.start.allowBroad = spec.AllowBroadKeyUsage
		if err := ks.start(ctx, r); err != nil {
			if backends.KindOf(err) != backends.KindUnavailable {
				return nil, err
			}
			ks.wait(ctx, r, err, opts.Fallback) // startup.go
		}
		ks.rings = append(ks.rings, r)
		ks.byName[r.Name] = r
	}
	// Certificates once every ring is in place: CA rings first, so that
	// the rings they serve find their certificates.
	for _, ca := range []bool{true, false} {
		for _, r := range ks.rings {
			if r.ca == ca && r.start.waiting.Load() == nil {
				ks.certify(ctx, r)
				if err := r.certs.permanent(); err != nil {
					return nil, fmt.Errorf("key ring %q: x5c: %w", r.Name, err)
				}
			}
		}
	}
	ks.hooks.onChange, ks.hooks.onHealth, ks.hooks.onMismatch = opts.OnChange, opts.OnHealth, opts.OnKeyMismatch
	return ks, nil
}

// checkCertSpec refuses certificates on a backend that cannot store them,
// and a ca_ring that is not a CA ring of this key set.
func checkCertSpec(spec RingSpec, specs []RingSpec) error {
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
// own DeadlineExceeded. The margin (a quarter of the time left, at most
// answerMargin) is what answering takes after the backend call gives up:
// mapping the error, the audit record, the response on the wire, on a
// replica that may be busy.
func (ks *KeySet) backendContext(ctx context.Context) (context.Context, context.CancelFunc) {
	timeout := ks.backendTimeout
	if dl, ok := ctx.Deadline(); ok {
		remaining := time.Until(dl)
		if r := remaining - min(remaining/4, answerMargin); r < timeout {
			timeout = r
		}
	}
	return context.WithTimeout(ctx, timeout)
}

// answerMargin is the most of a caller's deadline kept back from a backend
// call for answering.
const answerMargin = time.Second

// current returns the ring's versions with states as of now: the stored
// snapshot, or, once the clock has passed one of its boundaries, a snapshot
// derived afresh from the same versions and not stored.
func (ks *KeySet) current(r *Ring) *snapshot {
	s := r.snap.load()
	if now := ks.now(); s.due(now) {
		d := derive(s.versions, r.Schedule, r.cert, s.read, now)
		d.origin = s.origin
		return d
	}
	return s
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
	// Waiting: the ring's backend has not answered since start-up
	// (WaitingReason why), so it does not sign; it publishes the key set
	// read from the backend at ReadAt, taken from Source ("" with none).
	Waiting       bool
	WaitingReason error
	Source        string
	// ReadAt is when the published versions were read from the backend.
	ReadAt time.Time
}

// Status returns every ring's status, in configuration order.
func (ks *KeySet) Status() []RingStatus {
	out := make([]RingStatus, 0, len(ks.rings))
	for _, r := range ks.rings {
		s := ks.current(r)
		st := RingStatus{Name: r.Name, Schedule: r.Schedule, Versions: s.versions, Active: s.active,
			NextRotation: nextRotation(r.Schedule, s.versions), X5C: r.cert != nil, CA: r.ca}
		st.LastRefresh, st.RefreshFailures, st.LastError = r.reads.get()
		if d := r.health.down.Load(); d != nil {
			st.Down, st.DownError = d.at, d.err
		}
		st.ReadAt = s.origin.at
		var w StartWait
		w, st.Waiting = ks.Waiting(r)
		st.WaitingReason, st.Source = w.Reason, w.Source
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
