package lifecycle

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/signet-dev/signet/backends"
)

// RequestWindow is how long a replica remembers the Rotate request ids it
// served, for backends that do not record them with the version
// (backends.RequestRecorder): a retry after that, or on another replica,
// creates a new version.
const RequestWindow = 24 * time.Hour

// maxRequests bounds the remembered request ids per ring: rotations are
// rare, so this is only a guard against a caller rotating in a loop.
const maxRequests = 10000

// ErrRequestMismatch is in the error of Rotate (errors.Is) when a request
// id is used again with another revoke_previous than the call that created
// its version: the caller is confused about which rotation it is retrying.
var ErrRequestMismatch = errors.New("request id used with another revoke_previous")

// rotation is a ring's rotations in this process: mu is held for the
// whole of each (manual or scheduled), so that one runs at a time per ring,
// and requests is what they served.
type rotation struct {
	mu       sync.Mutex
	requests requests // guarded by mu
}

// request is what a Rotate request id created in this replica.
type request struct {
	versionID      string
	revokePrevious bool // the first call's, to refuse a retry that asks otherwise
	at             time.Time
}

// requests remembers, for RequestWindow, which version each Rotate request
// id created in this replica: the retry guarantee of backends that do not
// record ids (backends.RequestRecorder). It holds at most maxRequests ids,
// none older than RequestWindow once remember has run.
type requests map[string]request

// lookup returns what id created, if that was within RequestWindow of now.
func (m requests) lookup(id string, now time.Time) (request, bool) {
	req, ok := m[id]
	return req, ok && now.Sub(req.at) < RequestWindow
}

// remember notes that id created req at now, forgetting what has aged out
// and, at the bound, the oldest id.
func (m *requests) remember(id string, req request, now time.Time) {
	if *m == nil {
		*m = requests{}
	}
	for old, r := range *m {
		if now.Sub(r.at) >= RequestWindow {
			delete(*m, old)
		}
	}
	if len(*m) >= maxRequests {
		oldest := ""
		for old, r := range *m {
			if oldest == "" || r.at.Before((*m)[oldest].at) {
				oldest = old
			}
		}
		delete(*m, oldest)
	}
	req.at = now
	(*m)[id] = req
}

// replay decides what a Rotate with requestID (non-empty) and
// revokePrevious returns instead of creating a version, given the ring's
// versions vs and the requests this replica remembers: the version the
// backend lists with the id, or the one remembered for it (nil, nil: none,
// create one). A remembered version the backend does not list (yet) is
// KindUnavailable, not a reason to create another; a remembered request
// with another revokePrevious is ErrRequestMismatch. (Backends that record
// the id do not record revoke_previous: a mismatch is caught only by the
// replica that served the first call.) It is pure.
func replay(vs []*Version, mem requests, requestID string, revokePrevious bool, now time.Time) (*Version, error) {
	req, known := mem.lookup(requestID, now)
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
	// A ring that has not started rotates only once it has: its first
	// version and key usage are decided on the backend's listing, not a seed.
	if err := ks.finishStart(ctx, r); err != nil {
		return nil, nil, false, err
	}
	r.rotation.mu.Lock()
	defer r.rotation.mu.Unlock()
	for attempt := 0; ; attempt++ {
		if err := ks.Refresh(ctx, r); err != nil {
			return nil, nil, false, err
		}
		if requestID != "" {
			if created, err = replay(r.snap.load().versions, r.rotation.requests, requestID, revokePrevious, ks.now()); err != nil {
				return nil, nil, false, err
			}
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
		if revoked, err = ks.revokeOlder(ctx, r, created, replayed); err != nil {
			_ = ks.Refresh(ctx, r) // to show what was revoked; the revocation's error is the one to return
			return created, revoked, replayed, err
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

// create makes a new version after the newest one the ring's snapshot
// knows, recording requestID with it where the backend can (and in this
// replica's memory as soon as the backend names the version), then re-reads
// the ring. It obtains no certificate: its callers certify (New only once
// every ring is read, so that a CA ring listed later is there). Called with
// r.rotation.mu held, or by New before anything else can use the ring.
//
// It runs detached from the caller's cancellation, bounded by
// backend_timeout alone: a caller that gives up (the client timeout that
// request ids exist for) must not abort a create half-way, after the backend
// made the version but before this replica learned its id, or the retry
// could not be recognised and would create another.
func (ks *KeySet) create(ctx context.Context, r *Ring, requestID string, revokePrevious bool) (*Version, error) {
	ctx = context.WithoutCancel(ctx)
	latest := ""
	if vs := r.snap.load().versions; len(vs) > 0 {
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
	if requestID != "" {
		r.rotation.requests.remember(requestID, request{versionID: v.ID, revokePrevious: revokePrevious}, ks.now())
	}
	if err := ks.Refresh(ctx, r); err != nil {
		return nil, err
	}
	if sv := find(r.snap.load().versions, v.ID); sv != nil {
		return sv, nil
	}
	return nil, backends.Errorf(backends.KindUnavailable, "", "version %s was created but the backend does not list it", v.ID)
}

// createFirst creates a version of a ring that has none enabled, at
// startup. Its certificate chain, if the ring has x5c, is New's to obtain
// once every ring (its CA ring included) is read. A conflict means that
// another replica is creating one, or that the backend is still cleaning
// up after an interrupted creation (it says Conflict until the evidence is
// older than its recovery grace, 2 × backend_timeout): re-read the ring and
// retry, for a bounded time, and take the version another replica made if
// one appears.
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
		if v := newestEnabled(r.snap.load().versions); v != nil {
			return v, false, nil
		}
	}
}
