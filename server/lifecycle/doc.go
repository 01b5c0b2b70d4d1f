// Package lifecycle is Signet's key set: each key ring's versions as its
// backend lists them, and the lifecycle state of every version (pending,
// active, retiring, retired, revoked) derived from those versions, the
// ring's Schedule and the clock. Nothing derived is ever stored, so any
// number of replicas reading the same backend agree without talking to each
// other.
//
// The package knows backends and time; it knows nothing of JWTs, protobuf
// or HTTP. Its parts, one file each:
//
//   - derive.go: the pure side. Derive (a version's state from the
//     versions, the Schedule and the clock) and derive (a ring's snapshot:
//     states, which versions are withheld for want of a certificate chain,
//     which version signs, the next boundary of the clock).
//   - store.go: the snapshot store, the only writer of a ring's snapshot
//     (one immutable snapshot per ring, read without locks), the check
//     that no kid is held twice across rings, and the hooks of an install
//     (OnChange; OnHealth when the ring starts or stops signing).
//   - refresh.go: reading the backend (Refresh) and checking what it lists
//     before the store installs it.
//   - health.go: whether each ring can sign (backend down, key mismatch)
//     and SigningProblems.
//   - rotation.go: Rotate, the creation of versions, and the request ids a
//     replica remembers.
//   - sign.go: Active (the version that signs now) and SignWith.
//   - reconcile.go: the Run loop and Tick, which act on decisions taken
//     from the snapshot and the clock alone (rotationDue, chainsNeeded).
//   - certificates.go: x5c chains (certify, issue).
//   - keyset.go: New, the Ring and Version types, and the read API
//     (Versions, Published, Status).
//   - startup.go: starting a ring (read, first version, key usage), and a
//     ring whose backend did not answer at start-up: seeded, never signing,
//     retried until it starts; Saved, the versions for a snapshot.
package lifecycle
