// Package pkcs11 is the HSM backend: key pairs are generated inside a
// PKCS#11 token as non-extractable, sensitive objects, and Signet only asks
// the token to sign. It needs cgo and the build tag "pkcs11"
// (go build -tags pkcs11); without it the scheme is registered by a stub that
// says how to build with it.
//
// URI (RFC 7512 attributes):
//
//	pkcs11:token=LABEL?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/signet/pin
//	pkcs11:slot-id=0?module-path=...                       (PIN from SIGNET_PKCS11_PIN)
//
// Query options: module-path (required); pin-source, "file:PATH" or
// "env:VAR" (default env:SIGNET_PKCS11_PIN): the PIN never goes in the URI and
// never appears in a log or error; sessions=N, the session pool size
// (default 2 x GOMAXPROCS, at least 4).
//
// Objects. Each version is a key pair on the token: CKA_TOKEN, and for the
// private key CKA_PRIVATE, CKA_SENSITIVE set and CKA_EXTRACTABLE unset (so
// the token also sets CKA_NEVER_EXTRACTABLE). Every usage attribute is set
// explicitly, none left to the token's defaults: the private key has only
// CKA_SIGN (CKA_DECRYPT, CKA_UNWRAP, CKA_DERIVE, CKA_SIGN_RECOVER false), the
// public key only CKA_VERIFY (CKA_ENCRYPT, CKA_WRAP, CKA_VERIFY_RECOVER,
// CKA_DERIVE false). CheckKeyUsage reports a version whose private key allows
// more (made by hand, or by an earlier Signet). Both halves carry
//
//	CKA_LABEL = "signet/<ring>/<n>/<creation time, RFC 3339 UTC with nanoseconds>"
//	CKA_ID    = 4-byte big-endian version number n || 4 random bytes
//
// The version's backend id is CKA_ID in hex; the label ties it to its ring
// and records its creation time (tokens have no creation timestamp of their
// own; the time is the creating replica's and decides nothing).
//
// Rotation races (PKCS#11 has no conditional create): a new pair is
// generated as a candidate for version n, its public half labelled
// signet-pending/..., which no Versions lists. Candidates for n order by
// CKA_ID, which every replica reads alike from the token. A candidate
// commits (its public half gets the final label, which makes it a version)
// only if no pair for n has committed and no pending one orders before
// it; once committed, it reports success only when no committed pair
// orders before it and no pending one that does is left undecided (it
// waits, within the call's deadline, for that one's replica to commit or
// remove it). Every other candidate loses: its replica destroys it and
// reports a conflict. So a reported version is never displaced: any
// candidate for n listed after it committed loses before committing. Of
// two committed pairs for n, Versions lists the one with the smaller
// CKA_ID, which is the one that reported success. The price of deciding
// without any replica's clock: a candidate whose replica died before
// committing or destroying it may still be paused, not dead, so it holds
// its version number, and rotations onto it answer a conflict, until a
// refresh destroys it once seen for longer than the recovery grace. A
// labelled pair whose CKA_ID reads empty or short (SoftHSM2 rewrites an
// object's file when its label changes, and a list in that moment, or a
// process killed in it, sees the label without the CKA_ID) is a candidate
// whose place in the order cannot be read: it holds the number its label
// names, as a pending one does, until it is reaped.
//
// Crash recovery: a pair that is not a version (the loser of such a race
// whose replica died before destroying it, a candidate still labelled pending, a
// private half without its public half, halves labelled differently) is a
// stray: never listed, never signed with, and destroyed by Versions once
// this process has seen it for longer than the recovery grace
// (2 x backend_timeout), with a warning naming its CKA_ID and label;
// Leftovers lists strays. Listing reads every object on the token and
// picks the ring's by label, not by a class-and-CKA_ID template: an object
// whose CKA_ID is empty, short or missing (or that has no key class) is
// a stray of its own, named and destroyed by its object handle, since a
// template search may never find it, and one that did would find every
// key with an empty CKA_ID, another application's too. A public half alone with a final label is a
// revoked version, as revocation leaves it.
//
// Revocation destroys the private key object (C_DestroyObject): the version
// can never sign again, on any replica, and the token holds no trace of the
// private key. The public key object stays, so ListKeys shows the version as
// revoked.
//
// Signing: ES* hash the input and use CKM_ECDSA (the token returns raw R||S;
// its length is checked), RS* use CKM_SHA{256,384,512}_RSA_PKCS, PS* use
// CKM_SHA*_RSA_PKCS_PSS with MGF1 of the same hash and a salt as long as the
// hash, EdDSA uses CKM_EDDSA over the input. Algorithms whose mechanisms the
// token lacks are not offered (Algorithms), so a ring asking for one fails at
// startup.
//
// Sessions are pooled (PKCS#11 sessions must not be used concurrently). The
// user logs in once per token; a session the token reports invalid, closed or
// removed is dropped and replaced, and CKR_USER_NOT_LOGGED_IN causes a new
// login and one retry.
package pkcs11

// Scheme is the URI scheme of this backend.
const Scheme = "pkcs11"

// PINEnv is where the PIN comes from when the URI names no pin-source.
const PINEnv = "SIGNET_PKCS11_PIN"
