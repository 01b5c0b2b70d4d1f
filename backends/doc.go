// Package backends defines the contract between Signet and the systems that
// hold its private keys, a registry of backends by URI scheme, and the
// classified errors that the server maps to gRPC codes in one place. Six
// backends implement it, one package each:
//
//   - local: key files in a directory, sealed with a key-encryption key;
//   - vault: HashiCorp Vault Transit keys;
//   - awskms: AWS KMS asymmetric keys reached through aliases;
//   - gcpkms: Cloud KMS CryptoKeyVersions;
//   - azurekv: Azure Key Vault (or Managed HSM) key versions;
//   - pkcs11: key pairs on a PKCS#11 token (build tag pkcs11, cgo).
//
// A backend holds key rings. A key ring is a named signing identity with one
// algorithm and a list of versions; each version is one key pair inside the
// backend. The backend is the only source of truth about versions: Signet
// derives every lifecycle state from what [Signer.Versions] returns.
//
// # Rotation
//
// Replicas never talk to each other, so CreateVersion decides races in the
// backend. Every backend runs one protocol, written once as [Rotate] over
// the backend's primitives ([Protocol]), called in this order:
//
//  1. Newest reads the ring; the newest version must still be the caller's
//     latest ([CheckNewest]), else KindConflict;
//  2. Claim takes the next slot (a lock re-checks the newest version
//     under it);
//  3. Create makes a candidate for the slot that Versions does not list
//     yet, sent once; if it fails, Resolve reads back, on the detached
//     context, whether it was carried out though its answer was lost;
//  4. Settle waits until any candidate that could order before this one
//     must be visible (nothing to wait for where the claim is atomic);
//  5. Pick decides by a total order every replica reads alike from the
//     backend, never from a replica's clock ([Lost] when another won);
//  6. Commit makes the winner a version and returns it;
//  7. when no version was committed, Abandon removes or marks the
//     candidate made here and the caller gets KindConflict ([LostRace]),
//     or KindUnavailable if that failed; Release then gives up the claim.
//     What a dead replica left is reaped by any replica's Versions once
//     seen for longer than the recovery grace (recovery.go).
//
// Rules every backend keeps, which the conformance suite (package
// signertest) checks in its race, crash and lost-answer cases:
//
//   - A reported success is final: no version CreateVersion returned is
//     ever displaced by another candidate for its slot.
//   - A creating call is never sent again by a transport or an SDK, nor
//     is a write whose copy, landing later, could undo another replica's
//     (a lock's release, a claim, a revocation): after a lost answer what
//     the call did is found out by reading, or the caller gets an error it
//     may retry (KindUnavailable or KindConflict).
//   - Clean-up after a failed or lost create (Resolve, Abandon, Release)
//     runs on one detached context ([OpenOptions.Detached]), so that it
//     is over before another replica may act on what it leaves.
//
// How each backend maps the primitives (its rotation type says more):
//
//	backend  Claim              Create             Settle          Pick               Commit             Abandon; Release
//	local    none (the link)    temporary file     none            none (the link)    link <n>.json      remove the file; none
//	                                                                                  exclusively
//	vault    rotation lock key  the key (first),   none            still holds the    read the version   nothing made; delete
//	         (create-if-absent, or rotate; a lost                  lock (its ticket)  (rotate made it)   the lock key
//	         ticket read back)  answer read back
//	awskms   intent alias       CreateKey, intent  none            none (the intent   version alias      key scheduled for
//	         (CreateAlias); a   moved onto it                      alias holder)      (CreateAlias)      deletion; intent
//	         scan for the first                                                                          alias deleted
//	gcpkms   none               CryptoKeyVersion   poll until      lowest live        none: listed once  a loser's version
//	                            (listed at once:   ENABLED         number after       enabled            destroyed; none
//	                            deviation)                         latest
//	azurekv  next signet-seq    version, disabled, Key Vault's     first created (Key enable, tag        tagged lost (stays
//	                            tagged creating    clock past the  Vault's time, then published          disabled); none
//	                                               window          version id)
//	pkcs11   number in the      pair, public half  after the       no committed pair, relabel, then wait pair destroyed;
//	         CKA_ID             labelled pending   commit (Commit) no pending one     while a pending    none
//	                                                               with a smaller ID  one orders first
//
// PKCS#11 settles after committing because the token shows a candidate
// only once generated: one generated after this candidate's Pick may order
// before it, so a committed candidate reports success only once no pending
// one that orders before it is left undecided. Cloud KMS cannot create a
// version that is not listed: a loser that dies before destroying its
// version leaves it, an ordinary newer version (package gcpkms,
// Deviations).
package backends
