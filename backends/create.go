package backends

import (
	"context"
	"errors"
	"log/slog"
)

// Protocol is one CreateVersion's run of the rotation protocol (see the
// package documentation) on one backend: the backend's primitives, which
// Rotate calls in order. A backend makes one value per call, which keeps
// what each step learnt (the slot, the candidate, a lock's ticket). Each
// primitive marks its backend calls with Step, so the step names are the
// backend's own.
//
// Rotate calls Newest, checks it (CheckNewest), then Claim, Create, Settle,
// Pick and Commit, stopping at the first error; once Claim has been called
// it always calls Abandon (when no version was committed) and then Release,
// both on the detached clean-up context.
type Protocol interface {
	// Newest reads the ring as the backend lists it now and returns the
	// ID of its newest version ("" for none). It also learns the slot a
	// new version takes.
	Newest(ctx context.Context) (string, error)
	// Claim takes the slot after the newest version. A claim that is a
	// lock checks the newest version again under it (CheckNewest); a
	// claim refused because another replica holds the slot is
	// KindConflict. A backend whose candidate is its claim does nothing.
	Claim(ctx context.Context) error
	// Create makes this replica's candidate for the slot, which Versions
	// does not list yet (Cloud KMS: a declared deviation). The creating
	// call is sent once, never again by a transport or an SDK. It may
	// return Lost when the create itself tells that another candidate
	// holds the slot.
	Create(ctx context.Context) error
	// Resolve runs after Create failed with err, on the detached
	// context: it finds out by reading whether the create was carried
	// out though its answer was lost, and returns nil if it was (the
	// rotation goes on, on that context), or the error to report. A
	// backend that cannot read back a lost create returns err; what the
	// create left is then a leftover its recovery reaps.
	Resolve(ctx context.Context, err error) error
	// Settle waits until every candidate that could order before this
	// one must be visible. Nothing to wait for where the claim is atomic.
	Settle(ctx context.Context) error
	// Pick decides the slot by a total order that every replica reads
	// alike from the backend (never a replica's clock): nil when this
	// candidate wins, Lost when another's does.
	Pick(ctx context.Context) error
	// Commit makes the winning candidate a version and returns it as
	// Versions lists it. A backend whose commit is final only once
	// confirmed (PKCS#11) may still return Lost here.
	Commit(ctx context.Context) (Version, error)
	// Abandon runs, on the detached context, when the rotation ends
	// without a version: it removes or marks the candidate this replica
	// made, if any (lost: the candidate lost the slot; otherwise a step
	// failed), and says what became of it. An error leaves the candidate
	// to the recovery of any live replica, after the grace.
	Abandon(ctx context.Context, lost bool) (what string, err error)
	// Release gives up the claim (a lock, an intent marker) once the
	// rotation is over, won or not, on the detached context. A failure
	// is logged by the backend: the claim is then reaped after the grace.
	Release(ctx context.Context)
}

// Lost is what a primitive returns when this replica's candidate has lost
// its slot to winner ("" when the winner is not known).
func Lost(winner string) error { return &lostError{winner: winner} }

type lostError struct{ winner string }

func (e *lostError) Error() string { return "lost the slot to " + e.winner }

// NothingMade is what Abandon says when this replica left nothing behind.
const NothingMade = "nothing was made here"

// Rotate runs the rotation protocol over a backend's primitives p: the one
// CreateVersion of every backend. latest is the caller's newest version.
//
// The rules it keeps for every backend: a version is returned only from
// Commit, after Pick, so a reported success is what the order decided; a
// candidate that lost is abandoned and the caller gets KindConflict
// (LostRace), or KindUnavailable when its clean-up failed; everything done
// after a failure (reading back a lost create, abandoning a candidate,
// releasing a claim) runs on opts.Detached, which outlives the caller's
// deadline (one way an answer gets lost) and is over before any other
// replica may act on what this one leaves.
func Rotate(ctx context.Context, opts OpenOptions, backend string, ring KeyRing, latest string, p Protocol) (Version, error) {
	newest, err := p.Newest(ctx)
	if err != nil {
		return Version{}, err
	}
	if err := CheckNewest(backend, ring, newest, latest); err != nil {
		return Version{}, err
	}
	v, err := runClaimed(ctx, opts, p)
	dctx, cancel := opts.Detached(ctx)
	defer cancel()
	if err != nil {
		var l *lostError
		lost := errors.As(err, &l)
		what, cerr := p.Abandon(dctx, lost)
		switch {
		case cerr != nil:
			log := opts.Logger
			if log == nil {
				log = slog.New(slog.DiscardHandler)
			}
			log.Warn("backend: a rotation that made no version could not clean up after itself; a live replica does once the recovery grace has passed",
				"backend", backend, "key_ring", ring.Name, "candidate", what, "err", cerr)
			if lost {
				err = Errorf(KindUnavailable, backend, "key ring %q was rotated concurrently by another replica, and %s could not be cleaned up (a live replica does once the recovery grace has passed): %v",
					ring.Name, what, cerr)
			}
		case lost:
			err = LostRace(backend, ring, l.winner, what)
		case what != NothingMade:
			// The caller hears what became of the candidate too.
			err = &Error{Kind: KindOf(err), Msg: err.Error() + " (" + what + ")", Err: err}
		}
	}
	p.Release(dctx)
	return v, err
}

// runClaimed runs the primitives from Claim to Commit.
func runClaimed(ctx context.Context, opts OpenOptions, p Protocol) (Version, error) {
	if err := p.Claim(ctx); err != nil {
		return Version{}, err
	}
	if err := p.Create(ctx); err != nil {
		dctx, cancel := opts.Detached(ctx)
		defer cancel()
		if err := p.Resolve(dctx, err); err != nil {
			return Version{}, err
		}
		ctx = dctx // the create was carried out: decide it, whatever the caller's deadline
	}
	if err := p.Settle(ctx); err != nil {
		return Version{}, err
	}
	if err := p.Pick(ctx); err != nil {
		return Version{}, err
	}
	return p.Commit(ctx)
}

// CheckNewest is the first check of every CreateVersion: newest is the ID
// of the ring's newest version as the backend lists it now ("" for none),
// latest the one the caller knows of. It returns nil when they are the
// same, and otherwise the KindConflict error CreateVersion returns: another
// replica rotated since the caller read the versions, and the caller
// re-reads them rather than create a version after one it never saw.
func CheckNewest(backend string, ring KeyRing, newest, latest string) error {
	if newest == latest {
		return nil
	}
	if newest == "" {
		return Errorf(KindConflict, backend, "key ring %q changed: it has no versions, not %q", ring.Name, latest)
	}
	return Errorf(KindConflict, backend, "key ring %q changed: its newest version is %q, not %q", ring.Name, newest, latest)
}

// LostRace is the KindConflict error of a CreateVersion whose candidate
// lost to another replica's for the same slot: what lost says what became
// of the candidate made here.
func LostRace(backend string, ring KeyRing, winner, lost string) error {
	if winner == "" {
		return Errorf(KindConflict, backend, "key ring %q was rotated concurrently by another replica; %s", ring.Name, lost)
	}
	return Errorf(KindConflict, backend, "key ring %q was rotated concurrently: %s won; %s", ring.Name, winner, lost)
}

// Deviation is a rule of the rotation protocol (see the package
// documentation) that a backend cannot keep, and what happens instead. A
// backend declares each of its own next to its code, documents it, and
// tests that the deviation is what happens, no more.
type Deviation struct {
	Rule    string
	Instead string
}
