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
// backend. Every backend follows one protocol, in steps that it maps onto
// what its service offers:
//
//  1. check: the ring's newest version is still the caller's latest
//     ([CheckNewest]), else KindConflict;
//  2. claim the next slot and create a candidate for it that Versions does
//     not list yet;
//  3. settle: wait until any candidate that could order before this one
//     must be visible (nothing to wait for where the claim is atomic);
//  4. pick the winner by a total order every replica reads alike from the
//     backend, never from a replica's clock;
//  5. commit: the winner becomes a version;
//  6. losers remove or mark their own candidate and answer KindConflict
//     ([LostRace]); what a dead replica left is reaped by any replica's
//     Versions once seen for longer than the recovery grace (recovery.go).
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
//   - Clean-up after a failed or lost create runs on one detached context
//     ([OpenOptions.Detached]), so that it is over before another replica
//     may act on what it leaves.
//
// How each backend maps the steps (its package documentation says more):
//
//	backend  claim + candidate            settle             winner            commit                losers
//	local    temp file, linked            none (link is      the link          the link              nothing made
//	         exclusively as the version   atomic)
//	vault    rotation lock key (create-   none (the lock)    the lock holder   transit rotate        lock refused:
//	         if-absent, ticket read back)                                                            nothing made
//	awskms   intent alias (CreateAlias    none (aliases)     the intent alias  version alias         key scheduled
//	         is atomic), then the key                        holder                                  for deletion
//	gcpkms   a new CryptoKeyVersion       poll until         lowest version    none: listed when     version
//	         (listed at once: deviation)  ENABLED            number            enabled               destroyed
//	azurekv  a disabled version tagged    Key Vault's clock  Key Vault's       enable, tag           tagged lost
//	         creating with its sequence   past the window    created, then id  published             (disabled)
//	pkcs11   a pair whose public half is  wait for pending   smallest CKA_ID   relabel the public    pair destroyed
//	         labelled pending             that order first                     half
//
// Cloud KMS cannot create a version that is not listed: a loser that dies
// before destroying its version leaves it, an ordinary newer version (see
// package gcpkms, KnownDeviations).
package backends
