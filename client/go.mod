// The Go client of Signet (package signetclient): signing, cached tokens for
// oauth2, gRPC and HTTP, and the JWKS Verifier with its middleware. A module of
// its own, so that a service importing it requires the API module, gRPC,
// protobuf, x/oauth2 and the Verifier's JWT library, nothing of the server.
// Its go line is the oldest Go it builds with; the versions below are the
// least it needs (a service, like Signet's own module, may select newer ones).
// Versioned with the repository: see README.
module github.com/signet-dev/signet/client

go 1.25.0

require (
	github.com/lestrrat-go/httprc/v3 v3.0.6
	github.com/lestrrat-go/jwx/v3 v3.4.0
	github.com/signet-dev/signet/gen v0.0.0-00010101000000-000000000000
	golang.org/x/oauth2 v0.36.0
	golang.org/x/sync v0.22.0
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260706201446-f0a921348800
	google.golang.org/grpc v1.84.0
	google.golang.org/protobuf v1.36.11
)

require (
	github.com/decred/dcrd/dcrec/secp256k1/v4 v4.4.1 // indirect
	github.com/goccy/go-json v0.11.2 // indirect
	github.com/lestrrat-go/blackmagic v1.0.4 // indirect
	github.com/lestrrat-go/dsig v1.4.0 // indirect
	github.com/lestrrat-go/dsig-secp256k1 v1.0.0 // indirect
	github.com/lestrrat-go/httpcc v1.0.1 // indirect
	github.com/lestrrat-go/option/v2 v2.0.0 // indirect
	github.com/segmentio/asm v1.2.1 // indirect
	github.com/valyala/fastjson v1.6.10 // indirect
	golang.org/x/net v0.57.0 // indirect
	golang.org/x/sys v0.47.0 // indirect
	golang.org/x/text v0.40.0 // indirect
	google.golang.org/genproto/googleapis/api v0.0.0-20260706201446-f0a921348800 // indirect
)

// In this repository the client builds against the API module beside it; a
// release requires gen at the same version as the client (see README).
replace github.com/signet-dev/signet/gen => ../gen
