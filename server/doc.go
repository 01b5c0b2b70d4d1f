// Package server wires Signet together: it opens the backends, builds the
// key set (server/lifecycle), the caller authorization (server/authz) and
// the token assembly (server/jose) from a config (server/config), and serves
// the gRPC SignerService and KeySetService and, through grpc-gateway, the
// public HTTP side. It owns the interceptors, graceful shutdown and toStatus,
// the one place where domain errors become gRPC statuses.
// docs/architecture.md draws the packages and a Sign request's path.
package server
