// Package server is Signet's service: the gRPC SignerService and
// KeySetService, the key set that derives every version's lifecycle state
// from the backends, JWT assembly, JWKS rendering, and the HTTP side served
// through grpc-gateway.
package server
