package lifecycle

import (
	"context"
	"sync"
	"time"

	"github.com/signet-dev/signet/backends"
)

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

// run is one ring's loop. Its timer is set, after every wake, for the
// stored snapshot's next boundary: a store wakes it (slot.wake), so a new
// snapshot's boundary is never missed.
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
		case <-r.snap.wake:
		case <-boundary.C:
			ks.store.rederive(r)
		}
		if next := r.snap.load().next; !next.IsZero() {
			boundary.Reset(max(next.Sub(ks.now()), 0))
		} else {
			boundary.Stop()
		}
	}
}

// Tick is one round of reconciliation for a ring: re-read its versions,
// then do what the new snapshot and the clock call for: obtain or renew
// certificate chains (certify), and rotate if rotation_period has passed.
// Run calls it every refresh_interval; tests call it directly.
//
// A ring that has not started (its backend did not answer at start-up)
// tries to start instead of refreshing (finishStart).
func (ks *KeySet) Tick(ctx context.Context, r *Ring) {
	read := ks.Refresh
	if r.start.waiting.Load() != nil {
		read = ks.finishStart
	}
	if err := read(ctx, r); err != nil {
		if ctx.Err() == nil {
			ks.log.Warn("cannot refresh key ring; serving the last good key set", "key_ring", r.Name, "err", err)
		}
		return
	}
	ks.certify(ctx, r)
	if !rotationDue(r.Schedule, r.snap.load().versions, ks.now()) {
		return
	}
	r.rotation.mu.Lock()
	defer r.rotation.mu.Unlock()
	if !rotationDue(r.Schedule, r.snap.load().versions, ks.now()) {
		return // a rotation that held the lock has made the version
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

// rotationDue reports whether, at now, the newest enabled version of vs is
// older than the schedule's rotation_period. Because it is decided on the
// backend's versions and creation is conditional on the newest one,
// replicas create at most one version per period between them.
func rotationDue(s Schedule, vs []*Version, now time.Time) bool {
	next := nextRotation(s, vs)
	return !next.IsZero() && !now.Before(next)
}

// nextRotation is when rotation_period has passed since the newest enabled
// version of vs was created; zero for manual rotation or with nothing
// enabled.
func nextRotation(s Schedule, vs []*Version) time.Time {
	v := newestEnabled(vs)
	if s.RotationPeriod <= 0 || v == nil {
		return time.Time{}
	}
	return v.Created.Add(s.RotationPeriod)
}
