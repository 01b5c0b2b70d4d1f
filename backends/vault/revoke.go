package vault

import (
	"context"
	"strconv"

	"github.com/hashicorp/vault/api"

	"github.com/signet-dev/signet/backends"
)

// Revocation. Transit disables a prefix of a key's versions: every version
// below min_encryption_version refuses to sign. Revoking is raising it, and
// it must only ever rise: a write that lowers it makes revoked versions
// sign again. Transit's config write has no condition, so two replicas
// revoking at once could lower it (A reads 1 and writes 6; B read 1
// earlier and writes 4: versions 4 and 5 sign again). A revocation
// therefore reads the key, and if the minimum is still below its target,
// takes the ring's rotation lock (lock.go), reads the key again under it
// and writes only a higher minimum. Every writer of min_encryption_version
// holds the lock while it reads and writes, so none writes from a stale
// read. (The lock is removed as stale only after the recovery grace,
// 2 × backend_timeout, and a revocation's calls are bounded by
// backend_timeout, as a rotation's are.)

// DisableVersion raises min_encryption_version past the version, so Vault
// refuses to sign with it or any older version.
func (b *Backend) DisableVersion(ctx context.Context, ring backends.KeyRing, versionID string) error {
	n, err := b.parseVersion(ring, versionID)
	if err != nil {
		return err
	}
	return b.raiseMinimum(ctx, ring, n, n+1)
}

// DisableVersionsBefore raises min_encryption_version to the version, so
// Vault refuses to sign with any older one: a whole revocation in one
// write (backends.PrefixDisabler).
func (b *Backend) DisableVersionsBefore(ctx context.Context, ring backends.KeyRing, versionID string) error {
	n, err := b.parseVersion(ring, versionID)
	if err != nil {
		return err
	}
	return b.raiseMinimum(ctx, ring, n, n)
}

// parseVersion parses a version id; anything but a positive number is a
// version the key cannot have.
func (b *Backend) parseVersion(ring backends.KeyRing, versionID string) (int, error) {
	n, err := strconv.Atoi(versionID)
	if err != nil || n < 1 {
		return 0, errorf(backends.KindNotFound, "Transit key %q has no version %q", b.keyName(ring), versionID)
	}
	return n, nil
}

// raiseMinimum raises the key's min_encryption_version to target, never
// lowering it; version n must exist. It writes only when a read under the
// rotation lock still finds the minimum below target.
func (b *Backend) raiseMinimum(ctx context.Context, ring backends.KeyRing, n, target int) error {
	if err := b.checkOpen(); err != nil {
		return err
	}
	k, err := b.readKey(ctx, ring)
	if err != nil {
		return err
	}
	backends.Step(ctx, "read key")
	if done, err := b.raised(ring, k, n, target); done || err != nil {
		return err
	}
	ticket, err := b.acquireLock(ctx, ring)
	if err != nil {
		return err
	}
	backends.Step(ctx, "take lock")
	err = b.raiseLocked(ctx, ring, n, target)
	rctx, cancel := b.opts.Detached(ctx)
	defer cancel()
	if rerr := b.releaseLock(rctx, ring, ticket); rerr != nil && err == nil {
		// The revocation is done; a live replica deletes the lock key after the grace.
		b.log.Warn("vault: could not release the rotation lock after a revocation; a replica removes it after the recovery grace", "err", rerr)
	}
	return err
}

// raiseLocked reads the key again and writes target as its
// min_encryption_version if the minimum is still below it; the caller
// holds the ring's rotation lock.
func (b *Backend) raiseLocked(ctx context.Context, ring backends.KeyRing, n, target int) error {
	k, err := b.readKey(ctx, ring)
	if err != nil {
		return err
	}
	backends.Step(ctx, "read key under lock")
	if done, err := b.raised(ring, k, n, target); done || err != nil {
		return err
	}
	name := b.keyName(ring)
	if _, err := b.call(once(ctx), func(ctx context.Context) (*api.Secret, error) {
		return b.client.Logical().WriteWithContext(ctx, b.path("keys", name, "config"), map[string]any{"min_encryption_version": target})
	}); err != nil {
		return b.classify(err, "revoking versions of Transit key %q (raising min_encryption_version from %d to %d)",
			name, k.MinEncryptionVersion, target)
	}
	backends.Step(ctx, "write min_encryption_version")
	return nil
}

// raised reports whether key k (nil: none) already has a minimum of at
// least target, or why version n cannot be the bound of a revocation.
func (b *Backend) raised(ring backends.KeyRing, k *transitKey, n, target int) (bool, error) {
	name := b.keyName(ring)
	switch {
	case k == nil || n > k.LatestVersion:
		return true, errorf(backends.KindNotFound, "Transit key %q has no version %d", name, n)
	case k.MinEncryptionVersion >= target || target <= 1:
		return true, nil // already disabled, or nothing to disable
	case target > k.LatestVersion:
		return true, errorf(backends.KindFailedPrecondition, "cannot disable version %d of Transit key %q: it is the newest, "+
			"and Transit only disables older versions (rotate first)", n, name)
	}
	return false, nil
}
