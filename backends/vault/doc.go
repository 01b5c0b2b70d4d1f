// Package vault is the HashiCorp Vault Transit backend: private keys are
// Transit keys created with exportable=false, and Signet only ever asks
// Transit to sign.
//
// URI:
//
//	vault://HOST:PORT/MOUNT?option=value&...
//	vault:///transit            (address from VAULT_ADDR, as the vault CLI)
//
// Options (none of them secret):
//
//	scheme=https|http        default https; http only for a local dev server
//	namespace=NS             Vault Enterprise namespace (or VAULT_NAMESPACE)
//	ca_file, client_cert, client_key, tls_server_name
//	                         TLS to Vault (or VAULT_CACERT, VAULT_CLIENT_CERT, ...)
//	auth=token|approle|kubernetes
//	                         default token
//	token_file=PATH          auth=token: read the token from a file, re-read when
//	                         Vault stops accepting the old one; else VAULT_TOKEN
//	role_id=ID, secret_id_file=PATH
//	                         auth=approle; the secret id comes from the file or
//	                         from SIGNET_VAULT_SECRET_ID
//	role=NAME, jwt_file=PATH auth=kubernetes; jwt_file defaults to the pod's
//	                         service account token
//	auth_mount=PATH          mount of the auth method (default approle/kubernetes)
//	key_prefix=P             Transit key name = P + ring name (default no prefix)
//	key.RING=NAME            Transit key name of one ring, overriding key_prefix
//	batch_size=N             most signatures per Transit request (default 32)
//
// Tokens from a login are renewed in the background (api.LifetimeWatcher) and
// a new login happens when renewal ends (max TTL) or Vault rejects the token.
// No token, secret id or JWT ever appears in a log line or an error.
//
// Key rings and versions: a ring is one Transit key; its versions are the
// key's versions with Vault's own creation_time. The first CreateVersion
// creates the key with the type the algorithm needs (ecdsa-p256/p384/p521,
// rsa-2048/3072/4096, ed25519), exportable=false and
// allow_plaintext_backup=false (deletion_allowed stays false, Vault's
// default); an existing key of another type is a configuration error, and
// CheckKeyUsage reports one with any of the three set. Later CreateVersion
// calls rotate it. (An RSA Transit key can also encrypt and decrypt: only
// the token's policy, which needs no transit/decrypt path, keeps that shut.)
//
// Signing pins key_version and checks the version in Vault's answer. ECDSA
// asks for marshaling_algorithm=jws, which returns the fixed-length R||S that
// JWS needs; RS* uses signature_algorithm=pkcs1v15 and PS* uses pss with
// salt_length=hash (RFC 7518; Vault's default salt is the longest possible).
// Concurrent Signs for the same key version are coalesced into batch_input
// requests of up to batch_size signatures.
//
// Revocation: DisableVersion(N) raises the key's min_encryption_version to
// N+1, so Vault refuses to sign with version N or any older one (Transit can
// only disable a prefix of versions, which is what emergency rotation needs);
// DisableVersionsBefore(N) (backends.PrefixDisabler) raises it to N, which
// revokes every older version in one write however many there are. The
// minimum only ever rises: a revocation that finds it below its target
// takes the rotation lock, reads the key again and writes only a higher
// one, so two replicas revoking at once cannot lower it (revoke.go).
// Their key material stays in Vault's storage and their public keys stay
// listed, so ListKeys shows them as revoked. Vault does not let
// min_encryption_version go below min_decryption_version, and an operator
// can destroy revoked material for good by raising min_decryption_version and
// then trimming (transit/keys/NAME/trim with min_available_version): trimmed
// versions disappear from Vault and from ListKeys, and cannot be restored.
// Signet never trims by itself.
//
// Rotation races: Transit's rotate has no condition, so a rotation holds
// the ring's rotation lock, the Transit key signet-lock.NAME, created
// if absent with a random ticket that the holder reads back (lock.go); it
// checks the newest version again under the lock, rotates, reads the lock
// again (if it was removed as stale meanwhile, another replica may have
// rotated from the same version, and the rotation answers unavailable
// rather than claim a version that may be the other's), and deletes the
// lock key. A lock left by a dead replica is deleted by a refresh once
// seen for longer than the recovery grace; Leftovers lists it meanwhile.
// Transit's delete has no condition either: a release sets the lock key's
// deletion_allowed, reads the ticket again, and deletes only if the lock is
// still its own (a new lock key is created undeletable, and a setting that
// landed on another replica's new lock is taken back), so a late release
// leaves the lock another replica took meanwhile (releaseLock says what
// is left).
//
// Lost answers: the calls that change Vault's state (creating the key,
// rotating it, taking and deleting the lock key, config and certificate
// writes) are never sent again by the Vault client, whose retries (of
// reads and signatures: connection failures, 429, 502, 503, 504) skip
// them: a copy sent later lands on a state other replicas may have moved
// on. A 502 from a balancer or a dropped connection says nothing about
// whether Vault carried the call out: the backend reads the key (a newest
// version past the one it rotated from is its own if the lock still holds
// its ticket afterwards) or the lock's ticket, and the caller gets the
// version or an unavailable error.
//
// Crash safety: creating a version is one call (create, or rotate) that
// Vault carries out whole or not at all, adding a version every replica
// lists at once; revocation is one write of min_encryption_version. So a
// crash leaves at most the rotation lock key besides versions.
//
// The token needs, on MOUNT/keys/NAME: read and create/update (and
// MOUNT/keys/NAME/rotate, MOUNT/keys/NAME/config: update); on
// MOUNT/sign/NAME: update.
package vault
