package vault

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/signet-dev/signet/backends"
)

// The rotation lock. Transit's rotate has no condition: two replicas that
// read the same newest version and then both call rotate make two versions
// (the soak found this: replicas started together, or released together by
// a Vault that was down, run their scheduled rotation in the same
// millisecond). Transit's key creation, though, is create-if-absent under
// Vault's own lock on the key name, and its answer describes the key as it
// is, whoever created it. (Vault meant to add a warning "key ... already
// existed" when it was not the call that created the key, but 1.21 never
// does: its GetPolicy reports every key as new.) So a rotation first creates
// the ring's lock key, signet-lock.NAME (a name of its own, so that a policy
// can grant delete on lock keys and not on signing keys), with an
// auto_rotate_period chosen at random (an hour and up to 68 years more: a
// setting Vault keeps from the creation and echoes in every answer): the
// replica whose number comes back holds the lock, reads the newest version
// again, rotates, then deletes the lock key (Transit deletes a key only with
// deletion_allowed, which the lock key gets just before). The lock key is a
// small AES key that nothing ever
// encrypts with; the token's policy gives it no other use.
//
// A replica that dies holding the lock leaves the lock key behind. Every
// refresh (Versions) looks for it; one that this process has seen for longer
// than the recovery grace (2 × backend_timeout: the holder's calls are each
// bounded by backend_timeout) is deleted, logged and counted like every
// other clean-up after an interrupted operation.

// lockPrefix makes a ring's lock key name from its Transit key name.
const lockPrefix = "signet-lock."

// lockWait is how often a rotation that finds the lock held looks again,
// within its deadline: the holder keeps it for a few round trips.
const lockWait = 10 * time.Millisecond

func (b *Backend) lockName(ring backends.KeyRing) string { return lockPrefix + b.keyName(ring) }

// acquireLock creates the ring's lock key, waiting within ctx while another
// replica holds it, and returns its ticket. It fails with KindConflict when
// the deadline passes with the lock still held.
func (b *Backend) acquireLock(ctx context.Context, ring backends.KeyRing) (int64, error) {
	name := b.lockName(ring)
	for {
		ticket := int64(time.Hour/time.Second) + rand.Int64N(1<<31) // #nosec G404 -- tells lock holders apart, guards nothing
		secret, err := b.call(once(ctx), func(ctx context.Context) (*api.Secret, error) {
			return b.client.Logical().WriteWithContext(ctx, b.path("keys", name), map[string]any{"type": "aes128-gcm96",
				"exportable": false, "allow_plaintext_backup": false, "auto_rotate_period": ticket})
		})
		if err != nil {
			// The answer may be lost rather than the lock key not created:
			// the ticket it holds says whose it is.
			dctx, cancel := b.opts.Detached(ctx)
			_, current, rerr := b.readLock(dctx, ring)
			cancel()
			if rerr == nil && current == ticket {
				return ticket, nil
			}
			return 0, b.classify(err, "taking the rotation lock (creating Transit key %q)", name)
		}
		if lockTicket(secret) == ticket {
			return ticket, nil
		}
		select {
		case <-ctx.Done():
			return 0, errorf(backends.KindConflict, "Transit key %q is being rotated by another replica (its lock key %q exists)", b.keyName(ring), name)
		case <-time.After(lockWait):
		}
	}
}

// lockTicket is the auto_rotate_period (seconds) of the lock key that
// Vault's answer describes; 0 if it has none.
func lockTicket(s *api.Secret) int64 {
	if s == nil || s.Data == nil {
		return 0
	}
	n, err := strconv.ParseInt(fmt.Sprint(s.Data["auto_rotate_period"]), 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// releaseLock deletes the lock key if it is still the one with ticket: a
// holder that outlived the grace (its release late after a failure), or a
// second replica reaping the same stale lock, must not delete the lock
// another replica took after the first removed it.
//
// Transit has no conditional delete; what makes this one safe is that a
// lock key can be deleted only once deletion_allowed is set on it, and a
// new lock key is created without. So the ticket is checked after setting
// it, not only before: when the lock still holds ticket, the setting landed
// on this lock key (a ticket is never reused, so the key was not replaced
// in between); when it does not, the setting may have landed on another
// replica's new lock, and is taken back (false is always safe to write: at
// worst it keeps a lock that is being released, which is then reaped after
// the grace). A lock replaced between that check and the delete was
// created without deletion_allowed, and Vault refuses to delete it. What
// is left: the delete removes a new lock only if a second releaser's
// setting, landed on it from a check made before the old lock went, is not
// taken back yet: two releases of one stale lock, both late, around a new
// lock's creation, within one round trip.
func (b *Backend) releaseLock(ctx context.Context, ring backends.KeyRing, ticket int64) error {
	name := b.lockName(ring)
	_, current, err := b.readLock(ctx, ring)
	if err != nil {
		return err
	}
	backends.Step(ctx, "read lock")
	if current != ticket {
		return nil // gone, or another replica's
	}
	if err := b.setLockDeletable(ctx, name, true); err != nil {
		return b.classify(err, "releasing the rotation lock (allowing deletion of Transit key %q)", name)
	}
	backends.Step(ctx, "allow lock deletion")
	_, current, err = b.readLock(ctx, ring)
	if err != nil {
		return err
	}
	backends.Step(ctx, "read lock again")
	if current != ticket {
		if current != 0 {
			// Another replica's lock, perhaps made deletable above.
			if err := b.setLockDeletable(ctx, name, false); err != nil {
				return b.classify(err, "leaving another replica's rotation lock (Transit key %q) undeletable", name)
			}
		}
		return nil
	}
	if _, err := b.call(once(ctx), func(ctx context.Context) (*api.Secret, error) {
		return b.client.Logical().DeleteWithContext(ctx, b.path("keys", name))
	}); err != nil {
		if deletionRefused(err) {
			return nil // gone since the check, or replaced by a new lock, which keeps its deletion_allowed false
		}
		return b.classify(err, "releasing the rotation lock (deleting Transit key %q)", name)
	}
	backends.Step(ctx, "release lock")
	return nil
}

// setLockDeletable writes the lock key's deletion_allowed.
func (b *Backend) setLockDeletable(ctx context.Context, name string, allowed bool) error {
	_, err := b.call(once(ctx), func(ctx context.Context) (*api.Secret, error) {
		return b.client.Logical().WriteWithContext(ctx, b.path("keys", name, "config"), map[string]any{"deletion_allowed": allowed})
	})
	return err
}

// deletionRefused reports whether Vault refused to delete a Transit key
// because its deletion_allowed is not set, or found no key to delete (both
// answered as errors from Transit's key manager, with these words).
func deletionRefused(err error) bool {
	var re *api.ResponseError
	if !errors.As(err, &re) {
		return false
	}
	for _, e := range re.Errors {
		if strings.Contains(e, "deletion is not allowed") || strings.Contains(e, "could not delete key; not found") {
			return true
		}
	}
	return false
}

// readLock reads the lock key: when it was created and its ticket, or the
// zero time when there is none.
func (b *Backend) readLock(ctx context.Context, ring backends.KeyRing) (created time.Time, ticket int64, err error) {
	name := b.lockName(ring)
	secret, err := b.call(ctx, func(ctx context.Context) (*api.Secret, error) {
		return b.client.Logical().ReadWithContext(ctx, b.path("keys", name))
	})
	if err != nil {
		return time.Time{}, 0, b.classify(err, "reading the rotation lock (Transit key %q)", name)
	}
	if secret == nil || secret.Data == nil {
		return time.Time{}, 0, nil
	}
	ticket = lockTicket(secret)
	raw, err := json.Marshal(secret.Data["keys"])
	if err != nil {
		return time.Time{}, 0, err
	}
	// A symmetric key's versions read as version -> Unix seconds.
	var keys map[string]int64
	if err := json.Unmarshal(raw, &keys); err != nil || len(keys) == 0 {
		return time.Unix(0, 0), ticket, nil // a lock key all the same; its age comes from this process's sightings
	}
	var first int64
	for _, t := range keys {
		if first == 0 || t < first {
			first = t
		}
	}
	return time.Unix(first, 0), ticket, nil
}

// cleanLock deletes a lock key that this process has seen for longer than
// the recovery grace: its holder died.
func (b *Backend) cleanLock(ctx context.Context, ring backends.KeyRing) (cleaned bool, err error) {
	created, ticket, err := b.readLock(ctx, ring)
	if err != nil {
		return false, err
	}
	name := b.lockName(ring)
	key := fmt.Sprintf("%s@%d", name, ticket) // a new lock is new evidence
	if created.IsZero() {
		b.seenLocks.Forget(b.lastLock(name, ""))
		return false, nil
	}
	b.lastLock(name, key)
	return b.opts.Reap(&b.seenLocks, key, func() error { return b.releaseLock(ctx, ring, ticket) },
		Scheme, backends.RecoveredRemoved, name, "rotation lock held for longer than the grace: its replica died mid-rotation")
}

// lastLock remembers the sighting key of a ring's lock key (set non-empty)
// and returns the previous one, so that a lock's sighting is forgotten
// once it is gone.
func (b *Backend) lastLock(name, key string) string {
	b.locksMu.Lock()
	defer b.locksMu.Unlock()
	if b.lockKeys == nil {
		b.lockKeys = map[string]string{}
	}
	prev := b.lockKeys[name]
	if key != "" {
		b.lockKeys[name] = key
	}
	return prev
}
