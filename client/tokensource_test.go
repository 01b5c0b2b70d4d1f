package signetclient

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
)

// fakeClock is the TokenSource's clock in these tests, moved by hand, so
// that lifetimes are exact and the counts do not depend on the machine's
// speed.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// fakeSigner is a SignFunc issuing JWT-shaped tokens of lifetime on
// clock (plus skew, Signet's clock minus the host's), failing with fail
// when set, blocking on gate when set.
type fakeSigner struct {
	clock    *fakeClock
	lifetime time.Duration
	calls    atomic.Int32
	mu       sync.Mutex
	fail     error
	gate     chan struct{}
	delay    time.Duration // how long each Sign takes
	skew     time.Duration
}

func (f *fakeSigner) sign(ctx context.Context, _ string, _ ...SignOption) (*Token, error) {
	n := f.calls.Add(1)
	f.mu.Lock()
	fail, gate := f.fail, f.gate
	f.mu.Unlock()
	time.Sleep(f.delay)
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if fail != nil {
		return nil, fail
	}
	iat := f.clock.Now().Add(f.skew).Truncate(time.Second)
	exp := iat.Add(f.lifetime)
	payload := base64.RawURLEncoding.EncodeToString(fmt.Appendf(nil, `{"iat":%d,"exp":%d}`, iat.Unix(), exp.Unix()))
	return &Token{Token: fmt.Sprintf("e30.%s.token-%d", payload, n), ExpiresAt: exp}, nil
}

func newFake(lifetime time.Duration) (*fakeClock, *fakeSigner, *TokenSource) {
	clock := &fakeClock{now: time.Unix(1_800_000_000, 0)}
	f := &fakeSigner{clock: clock, lifetime: lifetime}
	ts := NewTokenSource(f.sign, TokenSourceOptions{}, "default", Audience("svc"))
	ts.now = clock.Now
	return clock, f, ts
}

// settle waits for the Sign in flight, if any, to end.
func (ts *TokenSource) settle() {
	ts.mu.Lock()
	done := ts.inflight
	ts.mu.Unlock()
	if done != nil {
		<-done
	}
}

// askAll has n goroutines ask ts for a token at once and returns what
// they got.
func askAll(t *testing.T, ts *TokenSource, n int) (tokens map[string]int, errs []error) {
	t.Helper()
	var mu sync.Mutex
	tokens = map[string]int{}
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := ts.TokenContext(context.Background())
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			tokens[tok.Token]++
		}()
	}
	wg.Wait()
	return tokens, errs
}

// TestTokenSourceOneSignPerLifetimeFraction: 100 goroutines asking for a
// token every (fake) second for ten token lifetimes cause one Sign per
// refresh, at 50-60% of each lifetime, and never see an error or a token
// that has expired.
func TestTokenSourceOneSignPerLifetimeFraction(t *testing.T) {
	const lifetime, span = time.Minute, 10 * time.Minute
	clock, f, ts := newFake(lifetime)
	f.delay = 20 * time.Millisecond // the callers of a round arrive while the refresh is in flight
	start := clock.Now()
	for clock.Now().Sub(start) < span {
		tokens, errs := askAll(t, ts, 100)
		if len(errs) > 0 {
			t.Fatalf("at +%v: %v", clock.Now().Sub(start), errs[0])
		}
		// The old token, and the new one once the refresh the round
		// started has landed.
		if len(tokens) > 2 {
			t.Fatalf("at +%v: 100 concurrent callers got %d different tokens, want at most 2: %v", clock.Now().Sub(start), len(tokens), tokens)
		}
		ts.settle()
		clock.Advance(time.Second)
	}
	// A refresh every 30-36s over 600s: 16 to 20 of them, plus the first.
	if got := f.calls.Load(); got < 17 || got > 21 {
		t.Errorf("%d Signs for 100 callers over %v of %v tokens, want 17-21 (one per 50-60%% of a lifetime)", got, span, lifetime)
	}
}

// TestTokenSourceSingleFlight: 100 goroutines asking at once with nothing
// cached share one Sign.
func TestTokenSourceSingleFlight(t *testing.T) {
	_, f, ts := newFake(time.Minute)
	f.gate = make(chan struct{})
	go func() {
		for f.calls.Load() == 0 {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(50 * time.Millisecond) // let the other 99 arrive while it is in flight
		close(f.gate)
	}()
	tokens, errs := askAll(t, ts, 100)
	if len(errs) > 0 || len(tokens) != 1 {
		t.Fatalf("100 callers: tokens %v, errors %v; want one token for all", tokens, errs)
	}
	if got := f.calls.Load(); got != 1 {
		t.Errorf("%d Signs for 100 concurrent callers, want 1", got)
	}
}

// TestTokenSourceRefreshesAhead: the token is not refreshed before half its
// lifetime, is past 60% of it, in the background: a caller gets the cached
// token at once while the Sign is in flight, and the fresh one after.
func TestTokenSourceRefreshesAhead(t *testing.T) {
	clock, f, ts := newFake(time.Minute)
	first, err := ts.TokenContext(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	clock.Advance(29 * time.Second)
	if tok, err := ts.TokenContext(context.Background()); err != nil || tok != first {
		t.Fatalf("at 29s: %v, %v; want the cached token", tok, err)
	}
	ts.settle()
	if got := f.calls.Load(); got != 1 {
		t.Fatalf("%d Signs before half the lifetime, want 1", got)
	}
	f.mu.Lock()
	f.gate = make(chan struct{})
	f.mu.Unlock()
	clock.Advance(7 * time.Second) // 36s: past 60%
	if tok, err := ts.TokenContext(context.Background()); err != nil || tok != first {
		t.Fatalf("at 36s, with the refresh in flight: %v, %v; want the cached token at once", tok, err)
	}
	if tok, err := ts.TokenContext(context.Background()); err != nil || tok != first {
		t.Fatalf("at 36s, asked again: %v, %v", tok, err)
	}
	close(f.gate)
	ts.settle()
	tok, err := ts.TokenContext(context.Background())
	if err != nil || tok == first || !tok.ExpiresAt.Equal(clock.Now().Add(time.Minute)) {
		t.Fatalf("after the refresh: %v, %v; want the new token", tok, err)
	}
	if got := f.calls.Load(); got != 2 {
		t.Errorf("%d Signs, want 2", got)
	}
}

// TestTokenSourceFailingSignet: while Signet fails, the cached token is
// served until it expires, with a retry every tenth of its lifetime, not
// per call; then callers get the Sign's *Error with its reason; once
// Signet is back, the next retry brings a token.
func TestTokenSourceFailingSignet(t *testing.T) {
	clock, f, ts := newFake(time.Minute)
	first, err := ts.TokenContext(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	down := &Error{Code: codes.Unavailable, Reason: signetv1.ErrorReason_BACKEND_UNAVAILABLE, ReasonName: "BACKEND_UNAVAILABLE", Message: "backend down"}
	f.mu.Lock()
	f.fail = down
	f.mu.Unlock()
	// Until a second before exp: the TokenSource counts exp-iat less a
	// second, their rounding to whole seconds.
	for clock.Advance(time.Second); clock.Now().Before(first.ExpiresAt.Add(-time.Second)); clock.Advance(time.Second) {
		tokens, errs := askAll(t, ts, 100)
		if len(errs) > 0 || tokens[first.Token] != 100 {
			t.Fatalf("at %v before expiry: tokens %v, %d errors (%v); want the cached token for all", first.ExpiresAt.Sub(clock.Now()), tokens, len(errs), errors.Join(errs[:min(len(errs), 1)]...))
		}
		ts.settle()
	}
	// The first refresh at 30-36s, then one every 6-7.2s until 60s
	// (the first Sign counts too).
	if got := f.calls.Load(); got < 5 || got > 7 {
		t.Errorf("%d Signs over a lifetime with Signet down, want 4-7 (a retry per tenth of the lifetime)", got)
	}
	_, errs := askAll(t, ts, 100)
	if len(errs) != 100 {
		t.Fatalf("%d errors after expiry, want 100", len(errs))
	}
	for _, err := range errs {
		var e *Error
		if !errors.As(err, &e) || e.Reason != signetv1.ErrorReason_BACKEND_UNAVAILABLE || e.Code != codes.Unavailable {
			t.Fatalf("after expiry: %v, want the Sign's *Error (Unavailable, BACKEND_UNAVAILABLE)", err)
		}
	}
	ts.settle()
	calls := f.calls.Load()
	if _, err := ts.TokenContext(context.Background()); err == nil {
		t.Fatal("a token after expiry with Signet down")
	}
	if got := f.calls.Load(); got != calls {
		t.Errorf("a call right after a failed Sign signed again (%d Signs, was %d)", got, calls)
	}
	f.mu.Lock()
	f.fail = nil
	f.mu.Unlock()
	clock.Advance(8 * time.Second) // past the retry interval
	tok, err := ts.TokenContext(context.Background())
	if err != nil || tok == first {
		t.Fatalf("Signet back: %v, %v; want a new token", tok, err)
	}
}

// TestTokenSourceWaitBoundedByContext: a caller with no cached token waits
// for the Sign only as long as its context allows, and gets an *Error
// with the context's code; the Sign goes on for the others.
func TestTokenSourceWaitBoundedByContext(t *testing.T) {
	_, f, ts := newFake(time.Minute)
	f.gate = make(chan struct{})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := ts.TokenContext(ctx)
	if e, ok := ErrorOf(err); !ok || e.Code != codes.DeadlineExceeded {
		t.Fatalf("%v, want an *Error with DeadlineExceeded", err)
	}
	close(f.gate)
	if _, err := ts.TokenContext(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := f.calls.Load(); got != 1 {
		t.Errorf("%d Signs, want 1 (the one the first caller started)", got)
	}
}

// TestTokenSourceClockSkew: a host whose clock is ahead of Signet's by more
// than a token's lifetime still caches it (one Sign, no errors), and one
// whose clock is behind does not serve a token past its real expiry while
// Signet is down: lifetimes are exp minus iat, counted on the host's clock.
func TestTokenSourceClockSkew(t *testing.T) {
	t.Run("host ahead", func(t *testing.T) {
		clock, f, ts := newFake(time.Minute)
		f.skew = -2 * time.Minute
		for range 3 {
			if tokens, errs := askAll(t, ts, 100); len(errs) > 0 || len(tokens) != 1 {
				t.Fatalf("tokens %v, %d errors (%v); want one token for all", tokens, len(errs), errors.Join(errs[:min(len(errs), 1)]...))
			}
			ts.settle()
			clock.Advance(10 * time.Second)
		}
		if got := f.calls.Load(); got != 1 {
			t.Errorf("%d Signs in 30s of a 1m token, want 1", got)
		}
	})
	t.Run("host behind", func(t *testing.T) {
		clock, f, ts := newFake(time.Minute)
		f.skew = 2 * time.Minute
		if _, err := ts.TokenContext(context.Background()); err != nil {
			t.Fatal(err)
		}
		f.mu.Lock()
		f.fail = &Error{Code: codes.Unavailable, Message: "down"}
		f.mu.Unlock()
		clock.Advance(30 * time.Second)
		if _, err := ts.TokenContext(context.Background()); err != nil {
			t.Fatalf("at 30s of 60s: %v, want the cached token", err)
		}
		ts.settle()
		clock.Advance(31 * time.Second)
		if tok, err := ts.TokenContext(context.Background()); err == nil {
			t.Fatalf("at 61s of a 60s token with Signet down: %v, want an error, not the expired token", tok)
		}
	})
}

// TestTokenSourceExpiredToken: a token Signet says is expired (exp not
// after iat) is an error for the callers waiting, and is not asked for
// again on every call: the next Sign waits for the retry interval.
func TestTokenSourceExpiredToken(t *testing.T) {
	clock, f, ts := newFake(-time.Second)
	_, errs := askAll(t, ts, 100)
	if len(errs) != 100 {
		t.Fatalf("%d errors of 100, want all: an expired token is no token", len(errs))
	}
	ts.settle()
	for range 10 {
		if _, err := ts.TokenContext(context.Background()); err == nil {
			t.Fatal("a token that expired")
		}
		ts.settle()
	}
	if got := f.calls.Load(); got != 1 {
		t.Errorf("%d Signs, want 1: an expired token must not make every call sign", got)
	}
	clock.Advance(2 * time.Second) // past the retry interval
	_, _ = ts.TokenContext(context.Background())
	ts.settle()
	if got := f.calls.Load(); got != 2 {
		t.Errorf("%d Signs after the retry interval, want 2", got)
	}
}

// TestTokenSourceNeverPastExp: iat and exp are whole seconds, iat rounded
// down, so a token signed 0.7s into a second has 0.3s less to live than
// exp-iat says: with Signet down, it is not served once its exp has passed.
func TestTokenSourceNeverPastExp(t *testing.T) {
	clock, f, ts := newFake(time.Minute)
	clock.Advance(700 * time.Millisecond)
	tok, err := ts.TokenContext(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.fail = &Error{Code: codes.Unavailable, Message: "down"}
	f.mu.Unlock()
	for clock.Now().Before(tok.ExpiresAt.Add(time.Second)) {
		got, err := ts.TokenContext(context.Background())
		if err == nil && !clock.Now().Before(got.ExpiresAt) {
			t.Fatalf("at %v, served a token whose exp is %v", clock.Now(), got.ExpiresAt)
		}
		ts.settle()
		clock.Advance(100 * time.Millisecond)
	}
}
