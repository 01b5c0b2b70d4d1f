package lifecycle

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/signet-dev/signet/backends"
)

// slot holds a ring's current snapshot. Anyone may load it, without a
// lock; only the store writes it.
type slot struct {
	cur     atomic.Pointer[snapshot] // nil only until New's first read of the ring is stored
	tickets atomic.Uint64            // numbers the reads of the ring in the order they start
	wake    chan struct{}            // capacity 1: tells the ring's Run loop that cur (and its next boundary) changed
}

func (s *slot) load() *snapshot { return s.cur.Load() }

// ticket numbers a read of the ring that is about to start: the snapshot
// of its versions never replaces one from a read that started later.
func (s *slot) ticket() uint64 { return s.tickets.Add(1) }

// store is the only writer of the rings' snapshots. Under mu it keeps:
//   - a stored snapshot is immutable, and is replaced only by one from a
//     read that started later, or by its own versions re-derived;
//   - its states are derived (derive) from its versions, the ring's
//     schedule and the clock at the instant it is stored;
//   - no kid is held by two versions across every ring's stored versions
//     (checkKidsUnique runs against them before anything is stored).
//
// After mu is released, each store wakes the ring's Run loop and calls
// OnChange, and OnHealth too when it changed whether the ring can sign.
type store struct {
	now   func() time.Time
	hooks *hooks
	mu    sync.Mutex
	rings []*Ring // guarded by mu: every ring New has started to read, in configuration order
}

// add makes r one of the rings whose kids are checked against each other.
func (st *store) add(r *Ring) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.rings = append(st.rings, r)
}

// put stores vs, the versions a read with ticket found (o: when, and
// whether from the backend or a seed), as r's snapshot, unless a read that
// started later has been stored already (then it reports false). It
// refuses versions of which two, in r or with a stored version of another
// ring, share a kid.
func (st *store) put(r *Ring, ticket uint64, vs []*Version, o origin) (bool, error) {
	st.mu.Lock()
	if err := st.checkKidsUnique(r, vs); err != nil {
		st.mu.Unlock()
		return false, err
	}
	old, cur := st.swap(r, ticket, vs, o)
	st.mu.Unlock()
	st.changed(r, old, cur)
	return cur != nil, nil
}

// rederive stores r's stored versions again with their states as of now,
// if the clock has passed the stored snapshot's boundary: the Run loop's
// call when its timer fires.
func (st *store) rederive(r *Ring) {
	var old, cur *snapshot
	st.mu.Lock()
	if s := r.snap.load(); s.due(st.now()) {
		old, cur = st.swap(r, s.read, s.versions, s.origin)
	}
	st.mu.Unlock()
	st.changed(r, old, cur)
}

// swap is the one write of a snapshot: it returns the snapshot it
// replaced and the one it stored (nil: a later read's is stored). Called
// with mu held.
func (st *store) swap(r *Ring, ticket uint64, vs []*Version, o origin) (old, cur *snapshot) {
	old = r.snap.load()
	if old != nil && old.read > ticket {
		return old, nil
	}
	cur = derive(vs, r.Schedule, r.cert, ticket, st.now())
	cur.origin = o
	r.snap.cur.Store(cur)
	return old, cur
}

// changed tells the Run loop and the hooks that r's snapshot changed from
// old to cur (nil: it did not). Called without mu, so that a hook may read
// the key set.
func (st *store) changed(r *Ring, old, cur *snapshot) {
	if cur == nil {
		return
	}
	select {
	case r.snap.wake <- struct{}{}:
	default:
	}
	st.hooks.changed()
	if couldSign := old != nil && old.active != nil; couldSign != (cur.active != nil) {
		st.hooks.health()
	}
}

// checkKidsUnique refuses versions of which two share a kid, within the
// ring or with a stored version of another ring: a JWKS holds a kid once,
// so one of them (and its alg) would be silently dropped and the other's
// tokens fail to verify; and revoking one would not revoke the key the
// other still signs with. A real KMS never generates one key twice, but an
// operator can import one (PKCS#11 objects, Transit imports) or point two
// rings at the same key. A revoked version is compared too when its kid is
// known: its key signing on in another ring would make the revocation
// void. Versions whose kid is unknown (revoked, key unreadable) are not
// compared. Called with mu held.
func (st *store) checkKidsUnique(r *Ring, vs []*Version) error {
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
	for _, other := range st.rings {
		s := other.snap.load()
		if other == r || s == nil {
			continue
		}
		for _, o := range s.versions {
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
