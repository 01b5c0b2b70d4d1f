// Package azurekv is the Azure Key Vault backend: every version is a
// version of a non-exportable Key Vault key (EC or RSA, EC-HSM or RSA-HSM
// when configured) whose private half never leaves Key Vault or Managed HSM.
//
// URI:
//
//	azurekv://VAULT-NAME.vault.azure.net/
//	azurekv://POOL-NAME.managedhsm.azure.net/?key_prefix=jwt-
//	azurekv://VAULT-NAME.vault.azure.net/?hsm=true
//
// Credentials come from azidentity.DefaultAzureCredential: workload
// identity on AKS (AZURE_FEDERATED_TOKEN_FILE), a managed identity, a
// service principal in the environment (AZURE_TENANT_ID, AZURE_CLIENT_ID,
// AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH), the Azure CLI;
// AZURE_AUTHORITY_HOST picks a sovereign cloud. Never from the URI.
// Options: key_prefix (default "signet-"; a ring's key is named key_prefix +
// ring name, 1-127 of 0-9 a-z A-Z -), hsm (true: EC-HSM and RSA-HSM keys;
// the default on *.managedhsm.azure.net hosts, which hold nothing else),
// disable_instance_discovery (true only for disconnected or private clouds
// such as Azure Stack Hub, whose authority Microsoft's instance discovery
// does not know; the tests use it for the same reason).
//
// Key rings. A ring is one key; its versions are the key's versions, with
// their "created" attribute. A version's backend id is its key id
// (https://VAULT/keys/NAME/VERSION). Keys: ES256/384/512 on P-256/384/521,
// RS* and PS* on RSA 2048/3072/4096 (by the hash, as elsewhere in Signet;
// larger existing keys are accepted), key_ops sign and verify only,
// exportable false. Key Vault has no Ed25519 keys, so EdDSA is refused at
// startup. Sign sends the digest with the JWS algorithm name Key Vault uses
// (ES256, PS256, ...; its PSS salt is as long as the hash) and gets ECDSA
// signatures as R||S already.
//
// Version order and races. Key Vault records "created" in whole seconds and
// lists versions in no documented order, and it has no conditional create.
// So every version Signet creates carries the tags signet-ring and
// signet-seq=n, where n is one more than the newest version's: versions
// sort by created, then signet-seq, then version id. Replicas that race to
// rotate all saw the same newest version, so their versions share one n;
// every replica agrees that the one created first (ties broken by version
// id) is the version, and the others are losers: never listed, disabled by
// the replica that made them when it re-lists right after creating (it then
// reports a conflict), or, if that replica died first, by any live replica
// once it has seen the loser for longer than the recovery grace. A replica
// that re-listed before a later racer's version appeared may report success
// for a version that then loses: that version was only ever pending (it
// signs only after publish_ahead), and the ring converges on one new
// version. Leftovers lists the losers.
//
// Revoke = UpdateKey enabled=false. Key Vault refuses get on a disabled
// version, and ListKeys must still show a revoked version's kid, so the same
// update stores the public key (PKIX, base64, in tags signet-pub-0,
// signet-pub-1, ...). A version disabled outside Signet has no such tags and
// is left out of the list, with a warning.
//
// Crash safety: a rotation creates one version in one call, listed at
// once, so a crash at any step leaves one version more or none; an
// interrupted revocation is finished by the retry (a disabled version is
// left as it is).
//
// Key usage: CheckKeyUsage reports enabled versions whose key_ops allow
// more than sign and verify, or that are exportable; the server refuses to
// start with them unless allow_broad_key_usage is set. A version without
// sign, or of another key type or curve, stops the ring at every read.
//
// Errors: 404 -> not found; 403 KeyDisabled -> failed precondition; 401 and
// other 403s (RBAC) -> permission denied, naming the data action; 429, 408
// and 5xx are retried by the SDK within the caller's deadline (honouring
// Retry-After), then unavailable; 400 -> invalid argument.
package azurekv
