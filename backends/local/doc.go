// Package local is the embedded development backend: key pairs are created
// in process and stored on disk, each private key encrypted at rest with
// AES-256-GCM under a key-encryption key (KEK).
//
// URI: local://./signet-data, local:relative/dir or local:///absolute/dir.
//
// The KEK is 32 bytes, base64 or hex, from the environment variable
// SIGNET_LOCAL_KEK. Without it, a KEK is generated into <dir>/kek on first
// start (with a loud warning): anyone who can read that file can read every
// key, so use SIGNET_LOCAL_KEK, or better a real backend, beyond a laptop. If
// key files exist and no KEK is found, or a KEK does not open them, opening
// fails: the backend never silently replaces keys.
//
// Layout: <dir>/rings/<ring>/<version>.json, one file per version, mode
// 0600, directories 0700. A file holds the version's algorithm, creation
// time, public key, encrypted private key and, for a Rotate that named
// one, its request id (backends.RequestRecorder); the file's ring, version,
// algorithm and public key are bound into the ciphertext as associated data,
// so a file moved or edited is refused. Revoking a version erases its
// private key from the file; the public part stays as the record.
//
// Several processes may share the directory: CreateVersion takes the next
// version number with an atomic link, so racing rotations create one
// version, not two. Writes are atomic (a temporary file .tmp-*, then link or
// rename): a crash leaves at most a temporary file, never a partial version,
// and Versions removes temporary files older than the recovery grace
// (2 x backend_timeout), logging each at warn; Leftovers lists them.
package local
