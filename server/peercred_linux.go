package server

import (
	"fmt"
	"net"
	"sync"

	"golang.org/x/sys/unix"
)

// peerCredentials asks the kernel who connected (SO_PEERCRED): the uid, gid
// and pid of the process at connect(), which it cannot forge.
func peerCredentials(c *net.UnixConn) (peerAuth, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return peerAuth{}, err
	}
	var (
		cred *unix.Ucred
		cerr error
	)
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) // #nosec G115 -- a file descriptor fits an int
	}); err != nil {
		return peerAuth{}, err
	}
	if cerr != nil {
		return peerAuth{}, fmt.Errorf("SO_PEERCRED: %w", cerr)
	}
	return peerAuth{UID: cred.Uid, GID: cred.Gid, PID: cred.Pid}, nil
}

// ownerOnly runs create (a bind) with the umask at 0177, so that what it
// creates is owner-only from the start. The umask is the process's:
// umaskMu keeps two such calls apart, and anything else created meanwhile
// only gets stricter permissions.
func ownerOnly(create func()) {
	umaskMu.Lock()
	defer umaskMu.Unlock()
	old := unix.Umask(0o177)
	defer unix.Umask(old)
	create()
}

var umaskMu sync.Mutex
