package backends

import (
	"context"
	"crypto"
	"time"
)

// KeyRing names a ring and fixes its algorithm. Backends use the algorithm to
// create versions of the right type and to refuse an existing ring of another.
type KeyRing struct {
	Name      string
	Algorithm Algorithm
}

// Version is one key pair of a key ring, as the backend records it.
type Version struct {
	// ID is the backend's own id for the version: a Vault key version, a KMS
	// key ARN, a PKCS#11 CKA_ID, ... Unique within the ring.
	ID        string
	Algorithm Algorithm
	// PublicKey is *ecdsa.PublicKey, *rsa.PublicKey or ed25519.PublicKey.
	// It is nil only for a Disabled version whose key the backend can no
	// longer read (Cloud KMS refuses GetPublicKey on a disabled version)
	// and keeps no record of: a revoked version is never published, so
	// listing it must not depend on its key. An enabled version always has
	// its key.
	PublicKey crypto.PublicKey
	// Created is the creation time the backend recorded, not the time Signet
	// first saw the version.
	Created time.Time
	// Disabled versions can never sign again (revoked).
	Disabled bool
	// Certificates is the X.509 certificate chain stored with the version
	// (DER, its own certificate first), by a backend that keeps one
	// (CertificateStore); nil when none is stored.
	Certificates [][]byte
	// CertificatesProblem says why the chain stored with the version
	// cannot be read (Certificates is then nil): a problem of this version,
	// which a new chain replaces, never a failure of Versions.
	CertificatesProblem string

	// RequestID is the id of the Rotate request that created the version,
	// where the backend records one (RequestRecorder); empty otherwise.
	RequestID string
}

// Signer is what a backend implements. All methods are safe for concurrent
// use, take a context first and honour its deadline. Errors are classified
// with [Error] so that callers can tell "not found" from "unavailable".
//
// Crash safety: after a crash at any point of CreateVersion,
// DisableVersion or DisableVersionsBefore (PrefixDisabler), a live
// replica converges, with no operator action, to a
// state where every backend object Signet created is either a published
// version of its ring or removed (or, where the backend cannot remove at
// once, scheduled for removal), within 2 × backend_timeout +
// 2 × refresh_interval of the crash, by any live replica: Versions cleans
// up what it finds evidence of, once that evidence has been seen for longer
// than OpenOptions.RecoveryGrace. Each CreateVersion yields at most one
// version; a version whose creation was interrupted is never listed before
// it is complete. Backends mark each boundary between their backend calls
// with Step, and the conformance suite crashes the operation at every one.
// recovery.go has the details.
type Signer interface {
	// Algorithms lists the algorithms this backend can create and sign with.
	Algorithms() []Algorithm

	// Versions lists every version of the ring, enabled or not, oldest
	// first. A ring that has no versions yet returns an empty list. A
	// disabled version is listed whatever the backend answers about its
	// key (PublicKey nil when it cannot be read): reading a revoked
	// version never fails Versions. A version may leave the list only once
	// it can never sign again (see RemovalChecker). It also
	// cleans up after interrupted operations of the ring (see Crash safety
	// above); a failing clean-up is logged, not returned.
	Versions(ctx context.Context, ring KeyRing) ([]Version, error)

	// Sign signs a JWS signing input (ASCII(header) "." ASCII(payload)) with
	// exactly the version named, never "the latest", and returns the JWS
	// signature: ECDSA as fixed-length R||S, RSA as the raw signature,
	// Ed25519 as the 64-byte signature. Signing with a disabled version fails
	// with KindFailedPrecondition.
	Sign(ctx context.Context, ring KeyRing, versionID string, signingInput []byte) ([]byte, error)

	// CreateVersion creates a new version, creating the ring first when it
	// has no versions. latest is the ID of the newest version the caller
	// knows of ("" when it knows of none); if the ring's newest version is no
	// longer that one, CreateVersion fails with KindConflict, so that
	// replicas racing to rotate create one version, not two. Races are
	// decided by the protocol in the package documentation, whose rules
	// every backend keeps (or declares a Deviation from):
	//
	//   - a reported success is final: the version returned is never
	//     displaced by another replica's candidate for its slot;
	//   - the call that creates (and a write whose late copy could undo
	//     another replica's) is never sent again by a transport or an
	//     SDK; after a lost answer the backend reads what it did, and the
	//     caller gets the version or an error it may retry
	//     (KindUnavailable, KindConflict);
	//   - clean-up after a failed or lost create (removing or marking a
	//     losing candidate, releasing a claim) runs on
	//     OpenOptions.Detached.
	CreateVersion(ctx context.Context, ring KeyRing, latest string) (Version, error)

	// DisableVersion makes a version unable to sign, permanently. Disabling a
	// disabled version is not an error, so an interrupted revocation is
	// finished by calling it again.
	DisableVersion(ctx context.Context, ring KeyRing, versionID string) error

	// Close releases the backend's resources. Calling it twice is safe.
	Close() error
}

// PrefixDisabler is implemented by backends that can revoke every version
// older than a given one in one step (Vault Transit: one write of
// min_encryption_version). The key set uses it for Rotate with
// revoke_previous; without it, it calls DisableVersion for each older
// version, a few at a time.
type PrefixDisabler interface {
	// DisableVersionsBefore makes every version that Versions lists
	// before versionID unable to sign, permanently, and leaves versionID
	// and every newer one as they are. Versions already disabled are not
	// an error, so an interrupted call is finished by calling it again; it
	// has the crash safety of DisableVersion (Signer), and it never makes
	// a disabled version sign again, whatever other replicas revoke
	// meanwhile. A versionID the ring does not have is KindNotFound. A
	// wrapper that passes the method through (the server's instrumented
	// backend) answers KindUnimplemented when the backend it wraps has
	// none: the caller then disables the versions one by one.
	DisableVersionsBefore(ctx context.Context, ring KeyRing, versionID string) error
}

// RemovalChecker is implemented by backends that take a version out of
// Versions' list once it is removed (Cloud KMS with destroy_on_revoke:
// versions scheduled for destruction or destroyed). The key set asks it
// about a version that signed, or may still have signed tokens, and is no
// longer listed: removal by a revocation is then no key mismatch.
type RemovalChecker interface {
	// Removed reports whether a version of the ring that Versions no
	// longer lists can never sign again (scheduled for destruction,
	// destroyed). False when it may still sign elsewhere, or when the
	// backend does not know it: the caller then treats the disappearance
	// as a key mismatch.
	Removed(ctx context.Context, ring KeyRing, versionID string) (bool, error)
}

// UsageChecker is implemented by backends that can tell whether a ring's
// existing keys allow more than signing: a PKCS#11 private key that may
// also decrypt or unwrap, an exportable Transit key, a key file others can
// read. The keys Signet creates never do; one that does was made or changed
// by hand. The key set calls it once per ring at startup and refuses to
// start unless the ring opts out (allow_broad_key_usage), in which case it
// logs the error as a warning.
type UsageChecker interface {
	// CheckKeyUsage returns nil when every key of the ring that can still
	// sign can do nothing else, and otherwise a KindFailedPrecondition
	// error that names each such key and the attribute that allows more.
	CheckKeyUsage(ctx context.Context, ring KeyRing) error
}

// RequestRecorder is implemented by backends that can record, with the
// version CreateVersion makes, the id of the Rotate request that asked for
// it (AIP-155 request_id), so that a retry of that request on any replica,
// at any later time, finds the version instead of creating another.
// Backends without it get a weaker guarantee from the key set: a retry that
// reaches the same replica within lifecycle.RequestWindow.
type RequestRecorder interface {
	// CreateVersionForRequest is CreateVersion that records requestID with
	// the new version, so that every later Versions lists it in
	// Version.RequestID. The version is never listed without its id.
	CreateVersionForRequest(ctx context.Context, ring KeyRing, latest, requestID string) (Version, error)
}
