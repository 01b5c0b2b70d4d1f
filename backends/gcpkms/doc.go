// Package gcpkms is the Google Cloud KMS backend: every version is a
// CryptoKeyVersion of an ASYMMETRIC_SIGN CryptoKey, whose private half never
// leaves Cloud KMS (an HSM by default).
//
// URI:
//
//	gcpkms:projects/PROJECT/locations/LOCATION/keyRings/KEY_RING
//	gcpkms:projects/acme-prod/locations/europe-west1/keyRings/signet?key_prefix=jwt-&protection_level=software
//
// The key ring must exist (Signet creates CryptoKeys in it, never key
// rings). Credentials come from Application Default Credentials: workload
// identity on GKE, the attached service account on Compute Engine and Cloud
// Run, a service-account key file named by GOOGLE_APPLICATION_CREDENTIALS;
// never from the URI. Options: key_prefix (default "signet-"; a ring's
// CryptoKey id is key_prefix + ring name, 1-63 of a-z A-Z 0-9 _ -),
// protection_level (hsm, the default, or software: the protection level of
// the versions Signet creates), destroy_on_revoke (default false, below),
// endpoint (host:port of a private or regional
// endpoint; tests point it at internal/gcpkmstest).
//
// Key rings. A ring is one CryptoKey, purpose ASYMMETRIC_SIGN, labelled
// managed-by=signet; its versions are the CryptoKeyVersions, with their
// create_time. A version's backend id is its full resource name
// (.../cryptoKeys/K/cryptoKeyVersions/N). Algorithms and version templates:
// ES256 EC_SIGN_P256_SHA256, ES384 EC_SIGN_P384_SHA384, RS256
// RSA_SIGN_PKCS1_2048_SHA256, RS512 RSA_SIGN_PKCS1_4096_SHA512, PS256
// RSA_SIGN_PSS_2048_SHA256, PS512 RSA_SIGN_PSS_4096_SHA512 (Cloud KMS's PSS
// salt is as long as the digest, as RFC 7518 requires), EdDSA
// EC_SIGN_ED25519. Cloud KMS has no P-521 and no RSA with SHA-384, so ES512,
// RS384 and PS384 are refused at startup. A ring made by hand may also hold
// 3072- and 4096-bit versions of RS256 and PS256; a version of any other
// algorithm stops the ring at every read, so a key with another purpose
// (which could decrypt) is never used.
//
// Version states. ENABLED versions sign; DISABLED ones are revoked. A
// version still PENDING_GENERATION (HSM keys take seconds) is neither
// listed nor used until Cloud KMS enables it; one DESTROY_SCHEDULED or
// DESTROYED can never sign again and is not listed (Leftovers shows those
// scheduled). Removed says so of a version that left the list, so that the
// key set takes a signing version's destruction (destroy_on_revoke, or an
// operator's) for a revocation, not for a key swapped behind its back.
//
// Revoked versions without a key. Cloud KMS refuses GetPublicKey on any
// version that is not ENABLED (FAILED_PRECONDITION "... is not enabled";
// Google's contract test TestGetPublicKeyDisabled expects exactly that from
// the real service), and a version has no labels to record its key in. So
// Versions reads public keys of ENABLED versions only; a DISABLED version is
// listed with the key this process cached while it was enabled, or with
// none (backends.Version.PublicKey nil). A version listed ENABLED whose key
// is then refused (FAILED_PRECONDITION) is read again with
// GetCryptoKeyVersion: revoked in between (another replica's rotation) it is
// listed DISABLED, or left out if scheduled for destruction. Such a version is named by its
// resource name (the backend id), listed revoked, with no kid in ListKeys
// (signet keys shows "-"), and never published: nothing needs its key.
//
// Rotate = CreateCryptoKeyVersion from the key's template (the ring's first
// version: CreateCryptoKey, which makes version 1), then polling
// GetCryptoKeyVersion until it is ENABLED, then GetPublicKey. Creating calls
// are never retried (a retry after a lost answer would make a second
// version). Cloud KMS has no conditional create, so replicas racing to
// rotate are settled after the fact: each re-lists the versions once its own
// is enabled, and all agree that the lowest-numbered live version after
// `latest` (the version the caller last saw as newest) won, since Cloud KMS
// numbers versions in creation order. A loser schedules the destruction of
// its own version (DestroyCryptoKeyVersion, the key's destroy-scheduled
// duration, during which an operator may restore it) and reports a
// conflict, so racing replicas end with one new enabled version. The first
// version is atomic: CreateCryptoKey fails with ALREADY_EXISTS for all but
// one replica.
//
// Known deviation from "racing replicas create one version": a loser that
// dies, or cannot reach Cloud KMS, between its creation and its
// destruction leaves its version ENABLED, so the ring gains two new
// versions. Cloud KMS cannot create a version disabled and a version has no
// labels, so nothing tells that version from a later rotation's and no
// replica removes it: it is an ordinary newer version, published and then
// signing after publish_ahead, as after one more rotation (nothing signs
// unpublished). An operator who does not want it disables it in Cloud
// KMS, and Signet lists it as revoked.
//
// Crash safety: the one object a rotation creates is a version of the
// ring, listed as soon as Cloud KMS has generated it, so a crash at any step
// leaves one version more or none and nothing to clean up (Versions does no
// recovery); the exception is the losing racer above.
//
// Revoke = UpdateCryptoKeyVersion state=DISABLED. The key material stays
// until an operator destroys the version, unless destroy_on_revoke=true: then
// revocation also schedules the version's destruction (the key's
// destroy-scheduled duration, during which it can be restored), and the
// version leaves the list (ListKeys no longer shows its kid).
//
// Sign sends the SHA-256/384/512 digest of the JWS signing input (EdDSA: the
// input itself, at most 64 KiB) with its CRC32C, and checks the answer as
// Google documents: verified_digest_crc32c (verified_data_crc32c), the
// signature's signature_crc32c, and the version name. A mismatch is asked
// again up to 3 times and then fails as unavailable, never as a token.
// ECDSA's DER signature becomes fixed-length R||S. Public keys are read with
// GetPublicKey (pem_crc32c checked the same way) once per version and
// cached (a DISABLED version's only from that cache, see above).
//
// Errors: NOT_FOUND -> not found; FAILED_PRECONDITION (a version not
// enabled) -> failed precondition; UNAVAILABLE, RESOURCE_EXHAUSTED and
// DEADLINE_EXCEEDED are retried by the client with backoff within the
// caller's deadline, then unavailable; PERMISSION_DENIED and UNAUTHENTICATED
// -> permission denied, naming the IAM permission the call needs.
package gcpkms
