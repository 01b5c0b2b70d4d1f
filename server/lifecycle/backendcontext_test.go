package lifecycle

import (
	"context"
	"testing"
	"time"
)

// TestBackendContextLeavesTimeToAnswer: a backend call gets the caller's
// deadline less a quarter of the time left (at most answerMargin), and
// never more than backend_timeout.
func TestBackendContextLeavesTimeToAnswer(t *testing.T) {
	ks := &KeySet{backendTimeout: 30 * time.Second}
	for _, c := range []struct{ left, want time.Duration }{
		{2 * time.Second, 1500 * time.Millisecond},
		{400 * time.Millisecond, 300 * time.Millisecond},
		{10 * time.Second, 9 * time.Second},
		{time.Minute, 30 * time.Second},
	} {
		dl := time.Now().Add(c.left)
		ctx, cancel := context.WithDeadline(context.Background(), dl)
		bctx, bcancel := ks.backendContext(ctx)
		got, _ := bctx.Deadline()
		bcancel()
		cancel()
		// The deadline is computed from time.Now() inside backendContext:
		// allow for the moment between the two readings.
		if d := got.Sub(dl.Add(c.want - c.left)); d.Abs() > 50*time.Millisecond {
			t.Errorf("caller with %v left: backend deadline %v before the caller's, want %v before", c.left, dl.Sub(got), c.left-c.want)
		}
	}
}
