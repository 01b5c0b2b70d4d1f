// Package awskms is the AWS KMS backend: every version is an asymmetric KMS
// key (KeyUsage=SIGN_VERIFY) whose private half never leaves KMS.
//
// URI:
//
//	awskms:?region=eu-west-1
//	awskms:?region=us-east-1&endpoint=https://vpce-0abc.kms.us-east-1.vpce.amazonaws.com&alias_prefix=signet&sign_rate=200
//
// Credentials and (without region=) the region come from the AWS SDK's
// default chain: environment, shared config and credentials files (profile=
// picks a profile), web identity, ECS and EC2 instance roles. Options:
// region, profile, endpoint (VPC endpoints, tests), alias_prefix (default
// "signet"), sign_rate (Sign calls per second per backend, default 100; KMS's
// account quota for asymmetric signing is a few hundred per second, and a
// client-side limit keeps bursts from turning into throttling storms),
// sign_burst (default 20).
//
// Key rings. A ring's versions are the KMS keys behind the aliases
//
//	alias/<alias_prefix>/<ring>/<n>      n = 1, 2, 3, ...
//
// A version's backend id is the key's ARN and its creation time is the key's
// CreationDate. A disabled key, or one pending deletion, is revoked. Keys are
// tagged signet:ring=<ring> and signet:version=<n>, and described, so an
// operator can see which ring owns each.
//
// Rotate = CreateKey (ECC_NIST_P256/P384/P521, RSA_2048/3072/4096 or
// ECC_NIST_EDWARDS25519, by algorithm), GetPublicKey and UpdateKeyDescription
// (the description keeps the public key, because KMS refuses GetPublicKey
// once a key is disabled and ListKeys must still show revoked versions), then
// CreateAlias for n+1. The alias is
// the lock: of two replicas rotating at once, one creates the alias and the
// other gets AlreadyExistsException, schedules deletion of the key it just
// made (7 days, the minimum), and reports a conflict. A CreateAlias that
// fails for another reason also schedules the new key's deletion, so no
// unreachable key is left behind; if even that fails the error says which key
// to delete.
//
// Revoke = DisableKey: KMS refuses to sign with a disabled key. The key
// material stays in KMS until an operator schedules its deletion.
//
// Sign sends MessageType=DIGEST with the hash of the JWS signing input and
// the matching SigningAlgorithm (ECDSA_SHA_*, RSASSA_PKCS1_V1_5_SHA_*,
// RSASSA_PSS_SHA_*; KMS's PSS salt is as long as the hash, as RFC 7518
// requires), and converts KMS's DER ECDSA signature to fixed-length R||S.
// EdDSA uses ED25519_SHA_512, which KMS only offers over the raw message,
// limited to 4096 bytes: an EdDSA token whose signing input is longer is
// refused with InvalidArgument. Sign never calls GetPublicKey: public keys
// are read with the version list and cached by ARN (they never change).
//
// Errors: NotFoundException -> not found; DisabledException and
// KMSInvalidStateException -> failed precondition; ThrottlingException,
// DependencyTimeoutException, KMSInternalException and network failures ->
// unavailable (after the SDK's retries, never past the caller's deadline);
// AccessDeniedException -> permission denied.
package awskms
