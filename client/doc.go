// Package signetclient is the Go client of Signet, for the internal services
// that ask it for tokens and those that verify them. Import it as
//
//	import signetclient "github.com/signet-dev/signet/client"
//
// [New] dials Signet's gRPC API with mTLS from certificate files, which it
// reads again whenever they change (so a rotated client certificate is used
// from the next connection on, with no restart). Its calls retry on
// Unavailable and ResourceExhausted with backoff, waiting what the server's
// google.rpc.RetryInfo says when it says, and never past the caller's
// deadline; Rotate sends a request_id that its own retries reuse, so that a
// retry returns the version the first attempt created instead of making
// another (on every replica where the backend records the id: see
// docs/api.md). Errors are [*Error] values (errors.As)
// carrying the stable reason of the server's google.rpc.ErrorInfo, for
// example RATE_LIMITED or AUDIENCE_NOT_ALLOWED (signet.v1.ErrorReason).
//
// [NewVerifier] verifies Signet's tokens against its JWKS, kept by a cache
// that refreshes it as the JWKS's Cache-Control max-age says, and returns the
// claims with numbers exact (json.Number).
//
// The package imports no server code: only gRPC, the generated API and the
// JWT library its Verifier is built on.
package signetclient
