// Package backends defines the contract between Signet and the systems that
// hold its private keys (Vault Transit, AWS KMS, a PKCS#11 HSM, or the
// embedded local store), a registry of backends by URI scheme, and the
// classified errors that the server maps to gRPC codes in one place.
//
// A backend holds key rings. A key ring is a named signing identity with one
// algorithm and a list of versions; each version is one key pair inside the
// backend. The backend is the only source of truth about versions: Signet
// derives every lifecycle state from what [Signer.Versions] returns.
//
// Every backend passes the conformance suite in package signertest.
package backends
