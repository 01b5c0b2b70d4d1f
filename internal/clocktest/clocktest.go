// Package clocktest is the clock that tests inject and move by hand, so
// that nothing waits for real time to pass.
package clocktest

import (
	"sync"
	"time"
)

// Clock is a settable clock, safe for concurrent use.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// New returns a clock that reads the current time until it is moved.
func New() *Clock { return &Clock{t: time.Now()} }

// Now is the clock's time; pass it where an Options.Now is asked for.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
