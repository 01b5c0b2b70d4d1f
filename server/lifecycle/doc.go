// Package lifecycle is Signet's key set: each key ring's versions as its
// backend lists them, and the lifecycle state of every version (pending,
// active, retiring, retired, revoked) derived from those versions, the
// ring's Schedule and the clock. Nothing derived is ever stored, so any
// number of replicas reading the same backend agree without talking to each
// other.
//
// The package knows backends and time; it knows nothing of JWTs, protobuf
// or HTTP. Derive is the pure function at its heart; KeySet keeps the
// versions fresh (Refresh, Run), rotates (Rotate, and scheduled rotation in
// Run) and picks the version that signs (Active).
package lifecycle
