package lifecycle

import (
	"testing"

	"go.uber.org/goleak"
)

// The Run loop and everything Rotate starts end with their context.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
