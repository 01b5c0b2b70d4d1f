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
// [Client.TokenSource] caches the token of one fixed request and signs again
// ahead of its expiry, once however many goroutines ask, keeping the cached
// token while Signet fails until it expires. It is an oauth2.TokenSource;
// [PerRPCCredentials] and [Transport] carry its tokens on gRPC calls and HTTP
// requests.
//
// [NewVerifier] verifies Signet's tokens against its JWKS, kept by a cache
// that refreshes it as the JWKS's Cache-Control max-age says, and returns the
// claims with numbers exact (json.Number); its typ must be the one expected
// (RFC 8725). [Verifier.Middleware], [Verifier.UnaryServerInterceptor] and
// [Verifier.StreamServerInterceptor] guard net/http handlers and gRPC
// services with it, putting the claims in the request's context
// ([ClaimsFromContext]).
//
// The package is a module of its own (github.com/signet-dev/signet/client)
// and imports no server code: only gRPC, protobuf, the generated API
// (github.com/signet-dev/signet/gen), x/oauth2 and the JWT library its
// Verifier is built on.
package signetclient
