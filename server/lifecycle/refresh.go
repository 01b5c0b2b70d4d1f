package lifecycle

import (
	"context"
	"sync"
	"time"

	"github.com/signet-dev/signet/backends"
)

// readLog is how a ring's reads of its backend went, for Status.
// Invariant: failures is 0 exactly when err is nil.
type readLog struct {
	mu       sync.Mutex
	last     time.Time // guarded by mu: when the last read that succeeded ended; zero before one
	failures int       // guarded by mu: the reads that failed since then
	err      error     // guarded by mu: the last failure; nil after a success
}

func (l *readLog) record(now time.Time, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		l.failures++
		l.err = err
		return
	}
	l.last, l.failures, l.err = now, 0, nil
}

func (l *readLog) get() (last time.Time, failures int, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last, l.failures, l.err
}

// Refresh re-reads the ring's versions from its backend. On failure the
// last good snapshot stays in force (and the JWKS keeps being served).
func (ks *KeySet) Refresh(ctx context.Context, r *Ring) error {
	ticket := r.snap.ticket()
	bctx, cancel := ks.backendContext(ctx)
	defer cancel()
	vs, err := r.backend.Versions(bctx, r.key)
	ks.observe(r, err)
	if err == nil {
		err = ks.accept(bctx, r, ticket, vs)
	}
	r.reads.record(ks.now(), err)
	return err
}

// accept checks a read of the ring's versions and has the store install
// it: every version's key is fit for the ring, nothing the ring published
// changed behind Signet's back, and (the store's check) no kid is held
// twice, in the ring or across rings.
func (ks *KeySet) accept(ctx context.Context, r *Ring, ticket uint64, vs []backends.Version) error {
	converted, err := ks.newVersions(r, vs)
	if err != nil {
		return err
	}
	if err := ks.checkKeysUnchanged(ctx, r, converted); err != nil {
		return err
	}
	if _, err := ks.store.put(r, ticket, converted, origin{at: ks.now()}); err != nil {
		return err
	}
	ks.setHealth(r, &r.health.keyChanged, nil) // a read in which no published key changed: the mismatch has passed
	return nil
}

// newVersions converts a read of the backend. A disabled version whose key
// the backend no longer shows (backends.Version.PublicKey nil) keeps the kid
// the ring knew it by, or none: a revoked version is never published, so
// its key is not needed; an enabled one without a key is refused.
func (ks *KeySet) newVersions(r *Ring, vs []backends.Version) ([]*Version, error) {
	out := make([]*Version, 0, len(vs))
	now := ks.now()
	var known []*Version
	if s := r.snap.load(); s != nil {
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
//
// A seed (startup.go) is not compared: it was never checked against this
// backend by this replica, and the backend's listing replaces it as a first
// read at start-up would have.
func (ks *KeySet) checkKeysUnchanged(ctx context.Context, r *Ring, vs []*Version) error {
	if s := r.snap.load(); s == nil || s.origin.seed != "" {
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
			ks.keyMismatch(r, &r.health.keyChanged, err)
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
