package vaulttest

import (
	"net"
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no goroutine outlives the tests: Start's process
// watcher ends when the test's cleanup kills Vault.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestStartRetriesATakenPort gives Start a port another listener holds
// first, as when another process takes the port between freeAddr and Vault
// binding it: Start must notice Vault failing to bind and try a new port.
func TestStartRetriesATakenPort(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	free := freeAddr
	t.Cleanup(func() { freeAddr = free })
	tries := 0
	freeAddr = func() (string, error) {
		if tries++; tries == 1 {
			return taken.Addr().String(), nil
		}
		return free()
	}
	s := Start(t)
	if tries != 2 {
		t.Errorf("Start took %d addresses, want 2 (the taken one, then a free one)", tries)
	}
	if s.Addr == "http://"+taken.Addr().String() {
		t.Fatalf("Start claims the taken address %s", s.Addr)
	}
	if _, err := s.Root(t).Sys().Health(); err != nil {
		t.Errorf("the server Start returned does not answer: %v", err)
	}
}
