package lifecycle

import (
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/signet-dev/signet/internal/gcpkmstest"
)

// TestMain points Application Default Credentials and the trust store at
// the Cloud KMS test server's (Go reads SSL_CERT_FILE once), then checks
// that the Run loop and everything Rotate starts end with their context.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "signet-lifecycle-")
	if err != nil {
		panic(err)
	}
	gcpkmstest.SetEnv(dir)
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			os.Stderr.WriteString(err.Error() + "\n")
			code = 1
		}
	}
	os.Exit(code)
}
