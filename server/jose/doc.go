// Package jose builds what Signet signs and publishes: the claims set of a
// token (with the checks on what a caller may put in it), its JOSE header,
// the compact JWS around a signature that a backend makes, and the JWKS and
// discovery documents with their cache headers. It holds no key and calls no
// backend: signing is a SignFunc the caller passes in.
package jose
