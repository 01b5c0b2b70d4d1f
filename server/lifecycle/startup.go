package lifecycle

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/signet-dev/signet/backends"
)

// Starting a ring. A ring starts when its backend has been read, its first
// version created if it has none enabled, and its keys found fit to sign
// only (checkKeyUsage): until then it never signs. When the backend does not
// answer at start-up (backends.KindUnavailable), New does not fail: the ring
// is seeded with its published key set from elsewhere (Options.Fallback: a
// snapshot on disk, the replica's peers), or left empty, and serves that in
// the JWKS while it waits; every Tick tries to start it again. Once the
// backend answers, its listing replaces the seed as a first read would have
// (the seed is never compared with it: checkKeysUnchanged), and the store's
// ticket order keeps the seed from ever replacing it. Any other failure
// (permission denied, not found, a key mismatch, keys that may do more than
// sign) is a misconfiguration that no waiting mends: New fails as before.

// Seed is a ring's versions as some earlier read of its backend listed
// them, from elsewhere than the backend: what a ring waiting for its
// backend publishes.
type Seed struct {
	Versions []backends.Version
	// ReadAt is when the versions were read from the backend.
	ReadAt time.Time
	// Source says where they came from, for the log and /statusz.
	Source string
}

// Saved is a ring's versions as last read from its backend (or seeded),
// for a snapshot that outlives the process.
type Saved struct {
	Name      string
	Algorithm backends.Algorithm
	ReadAt    time.Time
	Versions  []backends.Version // RequestID left out
}

// starting is a ring that has not started yet: New could not read its
// backend.
type starting struct {
	since  time.Time
	reason error  // why the backend could not be read at start-up
	source string // where the published keys come from; "" for none
}

// startState is a ring's start: one attempt at a time; waiting is nil once
// it has started.
type startState struct {
	mu         sync.Mutex
	allowBroad bool // the ring's allow_broad_key_usage
	waiting    atomic.Pointer[starting]
}

// start reads the ring's backend, creates its first version if it has no
// enabled one, and checks its keys' usage: what New does for each ring and
// Tick for one that waits.
func (ks *KeySet) start(ctx context.Context, r *Ring) error {
	if err := ks.Refresh(ctx, r); err != nil {
		return fmt.Errorf("key ring %q: reading versions: %w", r.Name, err)
	}
	// A ring with an enabled version that does not sign yet (an
	// emergency rotation's, waiting for every replica to publish it)
	// needs no new one; nor does one whose versions are withheld for
	// want of a certificate chain.
	if newestEnabled(r.snap.load().versions) == nil {
		v, created, err := ks.createFirst(ctx, r)
		if err != nil {
			return fmt.Errorf("key ring %q: creating its first version: %w", r.Name, err)
		}
		if created {
			ks.log.Info("created the first version of a key ring", "key_ring", r.Name, "kid", v.Kid, "backend_id", v.ID)
		}
	}
	return ks.checkKeyUsage(ctx, r, r.start.allowBroad)
}

// wait seeds a ring whose backend did not answer at start-up (why) from
// fallback, if it has something, or with no versions, and marks it
// waiting. A seed that fails the checks of a backend read (algorithm,
// keys, kid held by another ring) is logged and not used.
func (ks *KeySet) wait(ctx context.Context, r *Ring, why error, fallback func(context.Context, string, backends.Algorithm) (Seed, error)) {
	w := &starting{since: ks.now(), reason: why}
	var vs []*Version
	o := origin{seed: "none"}
	if fallback != nil {
		seed, err := fallback(ctx, r.Name, r.key.Algorithm)
		if err == nil {
			vs, err = ks.newVersions(r, seed.Versions)
		}
		if err == nil {
			// A fresh ticket: later than the read that failed, earlier than
			// any that follows, so the backend's first answer replaces it.
			if _, err = ks.store.put(r, r.snap.ticket(), vs, origin{at: seed.ReadAt, seed: seed.Source}); err == nil {
				w.source = seed.Source
			}
		}
		if err != nil {
			ks.log.Warn("no published key set for a key ring whose backend does not answer", "key_ring", r.Name, "err", err)
		}
	}
	if w.source == "" {
		_, _ = ks.store.put(r, r.snap.ticket(), nil, o) // no versions: no kid to conflict
	}
	r.start.waiting.Store(w)
	args := []any{"key_ring", r.Name, "err", why}
	if w.source != "" {
		args = append(args, "published_keys_from", w.source, "read_at", r.snap.load().origin.at)
	}
	ks.log.Warn("key ring's backend does not answer at start-up: serving its published keys without signing, and retrying "+
		"every refresh_interval", args...)
}

// finishStart starts a waiting ring (start) if its backend answers now;
// nil if the ring has started. Once it has, the ring signs again (its
// certificates follow in the caller: Tick, Rotate).
func (ks *KeySet) finishStart(ctx context.Context, r *Ring) error {
	if r.start.waiting.Load() == nil {
		return nil
	}
	r.start.mu.Lock()
	defer r.start.mu.Unlock()
	w := r.start.waiting.Load()
	if w == nil {
		return nil // another caller started it
	}
	r.rotation.mu.Lock()
	err := ks.start(ctx, r)
	r.rotation.mu.Unlock()
	if err != nil {
		return err
	}
	r.start.waiting.Store(nil)
	ks.log.Info("key ring's backend answers: the ring has started and its key set is the backend's", "key_ring", r.Name,
		"waited", ks.now().Sub(w.since).Round(time.Millisecond).String())
	ks.hooks.health()
	return nil
}

// StartWait is a ring that has not started: since when, why (its backend
// did not answer at start-up, nor since), and where its published keys
// come from ("" for none).
type StartWait struct {
	Since  time.Time
	Reason error
	Source string
}

// Waiting reports whether the ring has not started, and why; ok is false
// once it has.
func (ks *KeySet) Waiting(r *Ring) (w StartWait, ok bool) {
	s := r.start.waiting.Load()
	if s == nil {
		return StartWait{}, false
	}
	return StartWait{Since: s.since, Reason: s.reason, Source: s.source}, true
}

// notStarted is the error of Active and Rotate on a ring that has not
// started; nil if it has.
func (ks *KeySet) notStarted(r *Ring) error {
	w := r.start.waiting.Load()
	if w == nil {
		return nil
	}
	return backends.Errorf(backends.KindUnavailable, "", "key ring %q has not read its backend since this replica started "+
		"(at start-up: %v); it serves its published keys and signs once the backend answers", r.Name, w.reason)
}

// Unseeded lists the rings (CA rings aside) that publish nothing because
// their backend has not answered since start-up and no snapshot or peer
// gave their key set: a replica with one serves an incomplete JWKS.
func (ks *KeySet) Unseeded() []string {
	var out []string
	for _, r := range ks.rings {
		if w := r.start.waiting.Load(); w != nil && w.source == "" && !r.ca {
			out = append(out, r.Name)
		}
	}
	return out
}

// Saved returns every ring's versions as they are published now (read
// from the backend, or seeded), for a snapshot: rings that have none (left
// empty at start-up) are left out.
func (ks *KeySet) Saved() []Saved {
	out := make([]Saved, 0, len(ks.rings))
	for _, r := range ks.rings {
		s := r.snap.load()
		if s == nil || s.origin.at.IsZero() {
			continue
		}
		sv := Saved{Name: r.Name, Algorithm: r.key.Algorithm, ReadAt: s.origin.at, Versions: make([]backends.Version, len(s.versions))}
		for i, v := range s.versions {
			sv.Versions[i] = v.Version
			sv.Versions[i].RequestID = ""
		}
		out = append(out, sv)
	}
	return out
}
