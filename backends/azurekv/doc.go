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
// Key rings. A ring is one key; its versions are the key's versions. A
// version's creation time for Signet is when it was enabled and so
// published (the signet-published tag, Key Vault's clock), a few seconds
// after its "created" attribute, so that publish_ahead counts from when
// verifiers can first see it; versions without the tag use "created". A version's backend id is its key id
// (https://VAULT/keys/NAME/VERSION). Keys: ES256/384/512 on P-256/384/521,
// RS* and PS* on RSA 2048/3072/4096 (by the hash, as elsewhere in Signet;
// larger existing keys are accepted), key_ops sign and verify only,
// exportable false. Key Vault has no Ed25519 keys, so EdDSA is refused at
// startup. Sign sends the digest with the JWS algorithm name Key Vault uses
// (ES256, PS256, ...; its PSS salt is as long as the hash) and gets ECDSA
// signatures as R||S already.
//
// Version order and races. Key Vault records "created" in whole seconds,
// lists versions in no documented order, and has no conditional create. So
// every version Signet creates carries the tags signet-ring, signet-seq=n
// (one more than the newest published version's) and signet-state, and is
// created disabled (signet-state=creating): a disabled version neither
// signs nor is published. Replicas that race to rotate all saw the same
// newest version, so their versions share one n; of those not tagged lost,
// the one created first (ties broken by version id) wins. A replica does
// not decide while a racer that could still win may be unlisted: it waits
// until Key Vault's clock (the Date header of its create answer, plus the
// time since) is past created + 1 s + CreateWindow (1 s), then re-lists.
// Every racer that can ever be enabled is listed by then, because a
// replica whose create answer's Date is more than CreateWindow after its
// created time gives its version up (tags it lost, answers Unavailable)
// rather than decide. The winner enables its version in one update that
// also stores its public key and signet-state=published; a loser tags its
// own lost and answers Conflict. So a decision is final: no replica reports
// success for a version that later loses, and the ring gains at most one
// version. CreateVersion takes about 1-2 s more than Key Vault's create
// and must fit in backend_timeout (5 s by default; raise it for slow
// RSA-HSM keys). A rotation that finds a version of the same n still
// creating answers Conflict without creating.
//
// Version order: versions sort by created, then signet-seq, then version
// id. Versions made by releases that created them enabled (no
// signet-state) are published; of two with the same signet-seq the later
// is a loser, never listed, and disabled by a live replica once seen for
// longer than the recovery grace.
//
// Revoke = UpdateKey enabled=false. Key Vault refuses get on a disabled
// version, and ListKeys must still show a revoked version's kid, so the same
// update stores the public key (PKIX, base64, in tags signet-pub-0,
// signet-pub-1, ...). A version disabled outside Signet has no such tags: it
// is listed as revoked without a kid (its backend id, the key identifier
// URL, names it), and never published; so is one whose tags hold a key
// unfit for the ring (with a warning). A version listed enabled whose get
// is then refused (403 KeyDisabled: another replica revoked it meanwhile)
// is looked up in a second listing and, disabled there, listed revoked.
//
// Crash safety: a version is published only by the one update that
// enables it, so a crash at any step of a rotation leaves one version more
// (the crash came after that update) or only a disabled version tagged
// creating, which any live replica tags lost once it has seen it for
// longer than the recovery grace (2 x backend_timeout, more than a live
// CreateVersion can take); Key Vault cannot delete a single version, so a
// lost version stays disabled for good and is neither listed nor a
// leftover. Leftovers lists the versions still tagged creating. An
// interrupted revocation is finished by the retry (a disabled version is
// left as it is).
//
// Key usage: CheckKeyUsage reports enabled versions whose key_ops allow
// more than sign and verify, or that are exportable; the server refuses to
// start with them unless allow_broad_key_usage is set. A version without
// sign, or of another key type or curve, stops the ring at every read.
//
// Errors: 404 -> not found; 403 KeyDisabled -> failed precondition; 401 and
// other 403s (RBAC) -> permission denied, naming the data action (a
// vault's, or a Managed HSM's on a *.managedhsm.* host, whose local RBAC
// has its own); 409 ObjectIsDeletedButRecoverable (the key name is
// soft-deleted) -> failed precondition asking to recover or purge it; 429,
// 408 and 5xx are retried by the SDK within the caller's deadline
// (honouring Retry-After), then unavailable; 400 -> invalid argument. A
// credential chain that yields no token, or Entra ID refusing it, is
// permission denied; failing to reach Entra ID is unavailable.
//
// The vault host is kept in lower case and without :443, as Key Vault
// writes it in key ids.
package azurekv
