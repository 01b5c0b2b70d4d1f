package local_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them: Close
// must stop everything the backend started.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
