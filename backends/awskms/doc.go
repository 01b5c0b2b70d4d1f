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
// sign_burst (default 20), scan_rate (calls per second of a scan of the
// account's keys, below; default 50).
//
// Key rings. A ring's versions are the KMS keys behind the aliases
//
//	alias/<alias_prefix>/<ring>/<n>      n = 1, 2, 3, ...
//
// A version's backend id is the key's ARN and its creation time is the key's
// CreationDate. A disabled key, or one pending deletion, is revoked. Keys are
// tagged signet:ring=<ring>, signet:version=<n> and
// signet:alias-prefix=<alias_prefix>, and described, so an operator can see
// which ring owns each. A key made for a Rotate that named a request id
// also carries signet:request-id=<id> (backends.RequestRecorder), set by
// CreateKey with the key; Versions reads each key's tags once per process.
//
// Rotate = CreateAlias alias/<alias_prefix>/<ring>/rotating (the intent
// alias, on the newest version's key), CreateKey (ECC_NIST_P256/P384/P521,
// RSA_2048/3072/4096 or ECC_NIST_EDWARDS25519, by algorithm; sent once, never
// retried, since a retry after a lost answer would make a second key),
// UpdateAlias of the intent to the new key, GetPublicKey and
// UpdateKeyDescription (the description keeps the public key, because KMS
// refuses GetPublicKey once a key is disabled and ListKeys must still show
// revoked versions), CreateAlias for n+1, DeleteAlias of the intent. Both
// CreateAlias calls are sent once too (a copy would answer AlreadyExists
// for the alias the first made); a version alias found reaching the new
// key after any error is the rotation's own. The
// intent alias is the lock between rotating replicas (the second gets
// AlreadyExistsException and reports a conflict) and the version alias is
// the commit: a rotation that loses the version alias, or fails after
// CreateKey, schedules deletion of the key it made (7 days, the minimum) and
// deletes its intent alias. A CreateAlias whose answer is lost is checked
// before the key is rolled back.
//
// Crash recovery (recovery.go has the details). A replica that dies in a
// rotation leaves the intent alias, which every replica sees in the
// ListAliases it does anyway. Once a replica has seen it for longer than the
// recovery grace (2 x backend_timeout), it rolls the rotation back: the key
// the intent targets, or, if the replica died before UpdateAlias, the keys a
// scan finds tagged for the ring, the alias prefix and version n and created
// no earlier than the intent, are scheduled for deletion, and the intent
// alias is deleted. Never rolled forward: a rotation whose replica died
// yields no version, whichever replica finds it. A ring's first version has
// no key to hold an intent: creating it, and listing a ring without versions,
// scan for keys tagged for the ring (once per ring, and after a crash in
// that first creation). Scans list the keys (ListKeys) and describe each key
// not seen before (DescribeKey, then ListResourceTags for keys whose
// description is Signet's), at scan_rate, resuming at the next refresh if
// they cannot finish; keys without all three tags are never touched. Each
// clean-up is logged at warn with the key or alias; Leftovers lists the
// ring's keys no version alias reaches and its intent alias.
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
