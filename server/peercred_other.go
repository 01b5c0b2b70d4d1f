//go:build !linux

package server

import (
	"errors"
	"net"
)

// peerCredentials needs SO_PEERCRED, which this platform's build does not
// read: kubernetes_signer admits nobody here.
func peerCredentials(*net.UnixConn) (peerAuth, error) {
	return peerAuth{}, errors.New("kubernetes_signer needs Linux: callers are admitted by SO_PEERCRED")
}

// ownerOnly runs create; this platform has no umask to narrow (the socket
// is chmod-ed after it is created).
func ownerOnly(create func()) { create() }
