// The Signet API for Go: the messages and gRPC stubs generated from proto/
// (`make generate`). A module of its own, so that a service that calls or
// implements the API requires gRPC and protobuf and nothing of the server.
// Its go line is the oldest Go it builds with; versioned with the repository
// (see README: a release tags v1.2.3, gen/v1.2.3 and client/v1.2.3 together).
module github.com/signet-dev/signet/gen

go 1.25.0

require (
	google.golang.org/genproto/googleapis/api v0.0.0-20260706201446-f0a921348800
	google.golang.org/grpc v1.84.0
	google.golang.org/protobuf v1.36.11
)

require (
	golang.org/x/net v0.57.0 // indirect
	golang.org/x/sys v0.47.0 // indirect
	golang.org/x/text v0.40.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260706201446-f0a921348800 // indirect
)
