package server

import (
	"fmt"
	"net/http"
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/signet-dev/signet/internal/kmstest"
)

// Every server a test starts stops, with all its goroutines, by the end of
// the run. The tests' own HTTP keep-alive connections are closed first:
// they belong to the client.
func TestMain(m *testing.M) {
	if socket := os.Getenv(peerClientEnv); socket != "" {
		os.Exit(peerClientMain(socket)) // another uid's process (TestKubeSignerRefusesAnotherUIDsProcess)
	}
	kmstest.SetEnv() // test credentials for the AWS SDK, and none of this machine's AWS configuration
	code := m.Run()
	http.DefaultClient.CloseIdleConnections()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines outlived the tests:", err)
			code = 1
		}
	}
	os.Exit(code)
}
