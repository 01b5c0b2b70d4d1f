package lifecycle

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/signet-dev/signet/backends"
)

// problem is a condition that keeps a ring from signing: why, and when it
// was last seen.
type problem struct {
	at  time.Time
	err error
}

// health is what a ring's backend calls and signatures have shown about
// whether it can sign. Each condition is nil while absent; every change of
// one from absent to present or back calls OnHealth once (setHealth). Whether the ring has a version that signs is the
// snapshot's to say (the store reports its changes).
type health struct {
	down         atomic.Pointer[problem] // a backend call failed as unavailable; nil once a call gets an answer
	badSignature atomic.Pointer[problem] // a signature did not verify with its version's public key; nil once one does
	keyChanged   atomic.Pointer[problem] // a read found a published key changed or gone; nil once a read passes the checks
}

// setHealth sets condition c of ring r to p (nil: absent) and calls
// OnHealth if that made it present or absent.
func (ks *KeySet) setHealth(r *Ring, c *atomic.Pointer[problem], p *problem) {
	var changed bool
	switch {
	case p != nil:
		changed = c.Swap(p) == nil
	case c.Load() != nil: // the Sign path's usual case, absent and staying so, writes nothing
		changed = c.Swap(nil) != nil
	}
	if changed {
		ks.hooks.health()
	}
}

// observe records whether a backend call reached the backend: a call that
// failed as unavailable marks the ring down at once, any call that got an
// answer marks it up.
func (ks *KeySet) observe(r *Ring, err error) {
	var p *problem
	if err != nil && backends.KindOf(err) == backends.KindUnavailable {
		p = &problem{at: ks.now(), err: err}
	}
	ks.setHealth(r, &r.health.down, p)
}

// keyMismatch records in condition c that the ring's backend key does not
// match what it published, logs it and tells the hooks.
func (ks *KeySet) keyMismatch(r *Ring, c *atomic.Pointer[problem], err error) {
	ks.log.Error("key mismatch: refusing to sign or publish what the backend now holds", "key_ring", r.Name, "err", err)
	ks.hooks.mismatch(r.Name)
	ks.setHealth(r, c, &problem{at: ks.now(), err: err})
}

// SigningProblems lists why some ring cannot sign now: its backend does
// not answer, or it has no version that can sign. Empty means every ring
// can. It never concerns the JWKS, which is served from the last good key
// set whatever the backends do.
func (ks *KeySet) SigningProblems() []string {
	var why []string
	for _, r := range ks.rings {
		why = append(why, ks.signingProblems(r)...)
	}
	return why
}

// RingProblems lists why ring r cannot sign now (its backend does not
// answer, a key mismatch, no version that signs: an emergency rotation's
// wait, every version revoked or withheld); empty if it can. A CA ring's
// lists only its backend's and its keys' problems: it never signs tokens.
func (ks *KeySet) RingProblems(r *Ring) []string { return ks.signingProblems(r) }

// signingProblems lists why ring r cannot sign now; empty if it can.
func (ks *KeySet) signingProblems(r *Ring) []string {
	var why []string
	if err := ks.notStarted(r); err != nil {
		why = append(why, err.Error())
	}
	if cur := ks.current(r); cur.active == nil && !r.ca {
		why = append(why, ks.noActive(r, cur).Error())
	}
	if d := r.health.down.Load(); d != nil {
		why = append(why, fmt.Sprintf("key ring %q: backend unreachable since %s: %v", r.Name, d.at.UTC().Format(time.RFC3339), d.err))
	}
	for _, m := range []*problem{r.health.badSignature.Load(), r.health.keyChanged.Load()} {
		if m != nil {
			why = append(why, fmt.Sprintf("key ring %q: key mismatch since %s: %v", r.Name, m.at.UTC().Format(time.RFC3339), m.err))
		}
	}
	return why
}
