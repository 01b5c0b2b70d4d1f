package signetclient

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"strings"
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
// Lifetimes are Signet's (exp minus iat, both its clock, less a second for
// their rounding) counted on this host's monotonic clock from when the Sign
// was sent, so that a host whose clock is off from Signet's neither
// re-signs on every call (ahead) nor serves a token past its real expiry
// (behind). A token that Signet says is
// already expired (exp not after iat) is an error, retried like a failed
// Sign, not cached.
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
	expiry    time.Time     // when cur expires on this host's clock: its Sign's start plus lifetime
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
	if !(o.RefreshAfter > 0) { // NaN too
		o.RefreshAfter = 0.5
	}
	o.RefreshAfter = min(o.RefreshAfter, 0.85) // with its jitter, still ahead of expiry
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Second
	}
	return &TokenSource{sign: sign, keyRing: keyRing, opts: opts, o: o, now: time.Now}
}

// Token is oauth2.TokenSource's Token: TokenContext without a deadline of
// the caller's (each Sign still has Timeout). Its Expiry is the token's on
// this host's clock (see TokenSource), which is what x/oauth2 compares it
// with.
func (ts *TokenSource) Token() (*oauth2.Token, error) {
	tok, expiry, err := ts.token(context.Background())
	if err != nil {
		return nil, err
	}
	return &oauth2.Token{AccessToken: tok.Token, TokenType: "Bearer", Expiry: expiry}, nil
}

// TokenContext returns the cached token if it has not expired, starting a
// refresh in the background once it is due. Without a token that has not
// expired it waits for a Sign (one, shared with every other caller waiting)
// as long as ctx allows; the Sign itself is not cancelled when ctx is, for
// the others. Errors are *Error values.
func (ts *TokenSource) TokenContext(ctx context.Context) (*Token, error) {
	tok, _, err := ts.token(ctx)
	return tok, err
}

// token is TokenContext, with the token's expiry on this host's clock.
func (ts *TokenSource) token(ctx context.Context) (*Token, time.Time, error) {
	ts.mu.Lock()
	now := ts.now()
	if ts.cur != nil && now.Before(ts.expiry) {
		tok, expiry := ts.cur, ts.expiry
		if !now.Before(ts.refreshAt) && ts.inflight == nil {
			ts.startLocked()
		}
		ts.mu.Unlock()
		return tok, expiry, nil
	}
	if ts.lastErr != nil && now.Before(ts.refreshAt) && ts.inflight == nil {
		// The last Sign failed moments ago: its error, not another Sign.
		err := ts.lastErr
		ts.mu.Unlock()
		return nil, time.Time{}, err
	}
	if ts.inflight == nil {
		ts.startLocked()
	}
	done := ts.inflight
	ts.mu.Unlock()

	select {
	case <-done:
	case <-ctx.Done():
		return nil, time.Time{}, asError(status.FromContextError(ctx.Err()).Err())
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.cur != nil && ts.now().Before(ts.expiry) {
		return ts.cur, ts.expiry, nil
	}
	if ts.lastErr != nil {
		return nil, time.Time{}, ts.lastErr
	}
	// Only when the Sign took longer than the token's whole lifetime.
	return nil, time.Time{}, asError(errors.New("signetclient: the token Signet returned expired before it arrived (its ttl is shorter than a Sign takes)"))
}

// errExpiredToken is a token whose exp is not after its iat.
var errExpiredToken = errors.New("signetclient: Signet returned a token that is already expired (exp not after iat)")

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
		var lifetime time.Duration
		if err == nil {
			if lifetime = lifetimeOf(tok, start); lifetime <= 0 {
				err = errExpiredToken
			}
		}
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
		ts.cur, ts.lifetime, ts.expiry, ts.lastErr = tok, lifetime, start.Add(lifetime), nil
		ts.refreshAt = start.Add(jitter(time.Duration(float64(lifetime)*ts.o.RefreshAfter), 0.1/ts.o.RefreshAfter))
	}()
}

// lifetimeOf is how long tok lives from start: exp minus iat from its
// payload, both Signet's clock, so that this host's clock being off does not
// matter, less a second: both are whole seconds, iat the issue time rounded
// down, so the token may have been issued up to a second after iat (and
// after start). For a token without them (not a JWT Signet issued), or one
// that lives a second or less, ExpiresAt minus start on this host's clock.
// The payload is read, not verified: it is the token Signet just returned
// over an authenticated connection, used for timing only.
func lifetimeOf(tok *Token, start time.Time) time.Duration {
	parts := strings.Split(tok.Token, ".")
	if len(parts) == 3 {
		var c struct {
			Iat, Exp *int64
		}
		if b, err := base64.RawURLEncoding.DecodeString(parts[1]); err == nil && json.Unmarshal(b, &c) == nil && c.Iat != nil && c.Exp != nil {
			if d := time.Duration(*c.Exp-*c.Iat-1) * time.Second; d > 0 {
				return d
			}
		}
	}
	return tok.ExpiresAt.Sub(start)
}

// jitter is d plus a random fraction, up to f, of it.
func jitter(d time.Duration, f float64) time.Duration {
	return d + time.Duration(rand.Float64()*f*float64(d)) // #nosec G404 -- jitter, not a secret
}
