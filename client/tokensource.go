package signetclient

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"google.golang.org/grpc/status"
)

// SignFunc asks Signet for a token: (*Client).Sign, or any function with its
// contract (errors are *Error values).
type SignFunc func(ctx context.Context, keyRing string, opts ...SignOption) (*Token, error)

// TokenSourceOptions tunes a TokenSource; the zero value is a sane default.
type TokenSourceOptions struct {
	// RefreshAfter is the fraction of a token's lifetime after which a
	// fresh one is asked for, in the background while the cached one is
	// served; each token adds a random 0–10% of its lifetime, so that
	// replicas started together do not refresh together. 0 means 0.5; it
	// is capped at 0.85.
	RefreshAfter float64
	// Timeout bounds each Sign (with the Client's own retries). 0 means 30s.
	Timeout time.Duration
}

// TokenSource hands out tokens for one fixed request (key ring, audience,
// subject, claims, ttl, typ), signing a new one only when the cached one has
// lived RefreshAfter of its lifetime: a service that sends a token with
// every call asks Signet once per token lifetime fraction, not once per
// call. It is safe for concurrent use; however many goroutines ask, at most
// one Sign is in flight. While a refresh fails (Signet or its backend
// down), callers keep getting the cached token until it actually expires,
// and the refresh is tried again every tenth of the token's lifetime (at most
// 30s); once the token has expired, they get the refresh's error, an *Error
// with its Reason, and a failed Sign is not repeated for the same interval.
//
// It implements oauth2.TokenSource, so oauth2.NewClient, oauth2.Transport and
// gRPC's credentials/oauth.TokenSource take it as it is; [PerRPCCredentials]
// and [Transport] are the same for gRPC and net/http without the
// oauth2 wrappers, and pass the caller's context to a Sign that must wait.
type TokenSource struct {
	sign    SignFunc
	keyRing string
	opts    []SignOption
	o       TokenSourceOptions
	now     func() time.Time // time.Now; tests set a fake clock

	mu        sync.Mutex
	cur       *Token        // the cached token, nil before the first Sign
	lifetime  time.Duration // cur's, from when it was asked for to its expiry
	refreshAt time.Time     // when to ask for the next one (or retry a failed ask)
	inflight  chan struct{} // non-nil while a Sign runs; closed when it ends
	lastErr   error         // the last Sign's error, nil after a success
}

// TokenSource returns a TokenSource of tokens from keyRing with opts
// (Audience, Subject, Claims, TTL, Typ), signed through c.
func (c *Client) TokenSource(keyRing string, opts ...SignOption) *TokenSource {
	return NewTokenSource(c.Sign, TokenSourceOptions{}, keyRing, opts...)
}

// NewTokenSource returns a TokenSource of tokens sign returns for keyRing
// and opts.
func NewTokenSource(sign SignFunc, o TokenSourceOptions, keyRing string, opts ...SignOption) *TokenSource {
	if o.RefreshAfter <= 0 {
		o.RefreshAfter = 0.5
	}
	o.RefreshAfter = min(o.RefreshAfter, 0.85) // with its jitter, still ahead of expiry
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	return &TokenSource{sign: sign, keyRing: keyRing, opts: opts, o: o, now: time.Now}
}

// Token is oauth2.TokenSource's Token: TokenContext without a deadline of
// the caller's (each Sign still has Timeout).
func (ts *TokenSource) Token() (*oauth2.Token, error) {
	tok, err := ts.TokenContext(context.Background())
	if err != nil {
		return nil, err
	}
	return &oauth2.Token{AccessToken: tok.Token, TokenType: "Bearer", Expiry: tok.ExpiresAt}, nil
}

// TokenContext returns the cached token if it has not expired, starting a
// refresh in the background once it is due. Without a token that has not
// expired it waits for a Sign (one, shared with every other caller waiting)
// as long as ctx allows; the Sign itself is not cancelled when ctx is, for
// the others. Errors are *Error values.
func (ts *TokenSource) TokenContext(ctx context.Context) (*Token, error) {
	ts.mu.Lock()
	now := ts.now()
	if ts.cur != nil && now.Before(ts.cur.ExpiresAt) {
		tok := ts.cur
		if !now.Before(ts.refreshAt) && ts.inflight == nil {
			ts.startLocked()
		}
		ts.mu.Unlock()
		return tok, nil
	}
	if ts.lastErr != nil && now.Before(ts.refreshAt) && ts.inflight == nil {
		// The last Sign failed moments ago: its error, not another Sign.
		err := ts.lastErr
		ts.mu.Unlock()
		return nil, err
	}
	if ts.inflight == nil {
		ts.startLocked()
	}
	done := ts.inflight
	ts.mu.Unlock()

	select {
	case <-done:
	case <-ctx.Done():
		return nil, asError(status.FromContextError(ctx.Err()).Err())
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.cur != nil && ts.now().Before(ts.cur.ExpiresAt) {
		return ts.cur, nil
	}
	if ts.lastErr != nil {
		return nil, ts.lastErr
	}
	return nil, asError(errors.New("signetclient: Signet returned a token that has already expired (is this host's clock ahead?)"))
}

// startLocked starts the one Sign in flight; ts.mu is held.
func (ts *TokenSource) startLocked() {
	done := make(chan struct{})
	ts.inflight = done
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), ts.o.Timeout)
		defer cancel()
		start := ts.now()
		tok, err := ts.sign(ctx, ts.keyRing, ts.opts...)
		ts.mu.Lock()
		defer ts.mu.Unlock()
		ts.inflight = nil
		now := ts.now()
		if err != nil {
			ts.lastErr = asError(err)
			// Retry after a tenth of the cached token's lifetime (at most
			// 30s, at least 100ms), plus up to 20%, so that a Signet that
			// is down is not asked again by every call.
			// Before any token: 1s.
			retry := time.Second
			if ts.cur != nil {
				retry = min(max(ts.lifetime/10, 100*time.Millisecond), 30*time.Second)
			}
			ts.refreshAt = now.Add(jitter(retry, 0.2))
			return
		}
		lifetime := tok.ExpiresAt.Sub(start)
		ts.cur, ts.lifetime, ts.lastErr = tok, lifetime, nil
		ts.refreshAt = start.Add(jitter(time.Duration(float64(lifetime)*ts.o.RefreshAfter), 0.1/ts.o.RefreshAfter))
	}()
}

// jitter is d plus a random fraction, up to f, of it.
func jitter(d time.Duration, f float64) time.Duration {
	return d + time.Duration(rand.Float64()*f*float64(d)) // #nosec G404 -- jitter, not a secret
}
