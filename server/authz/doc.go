// Package authz decides who may call what. Callers are identified by their
// client certificate checked against the client CA: the SPIFFE ID of its
// one URI SAN, or dns:NAME from its first DNS SAN if it has no URI SAN
// (identity.go); a deny-by-default policy file grants identities what they
// may sign (rings, audiences, subjects, claims, typ, lifetime, rate), rotate
// and list, with per-caller limits on rotations and leftovers listings; every Sign, Rotate and denial is written to an audit log, and an
// audit log that cannot be written stops the action. The certificates and
// the policy are reloaded when their files change.
//
// Errors are *Error values with a Reason; the server maps them to gRPC
// codes. Nothing here imports gRPC.
package authz
