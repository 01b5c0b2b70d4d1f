package signetclient_test

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	signetclient "github.com/signet-dev/signet/client"
	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
	"github.com/signet-dev/signet/server/config"
)

// TestVerifierFollowsCacheControl: the Verifier's JWKS cache refreshes as
// the JWKS's Cache-Control max-age says (1s here), not as its MaxRefresh
// (an hour): after an emergency rotation removes a kid from the JWKS, a
// token of that kid stops verifying within a few seconds.
func TestVerifierFollowsCacheControl(t *testing.T) {
	cfg := testConfig(t.TempDir())
	r := &cfg.KeyRings[0]
	r.JWKSMaxAge, r.RefreshInterval = config.Duration(time.Second), config.Duration(time.Second)
	r.PublishAhead, r.TokenMaxTTL, r.TokenDefaultTTL = config.Duration(2*time.Second), config.Duration(time.Minute), config.Duration(time.Minute)
	r.RetireAfter = config.Duration(63 * time.Second)
	addr, jwks, stop, err := startSignet(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := stop(); err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := signetclient.New(signetclient.Config{Target: addr, Plaintext: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	old, err := c.Sign(ctx, "default", signetclient.Audience("svc"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := signetclient.NewVerifier(ctx, signetclient.VerifierConfig{JWKSURL: jwks, Issuer: exampleIssuer, Audience: "svc",
		MinRefresh: time.Second, MaxRefresh: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if _, err := v.Verify(ctx, old.Token); err != nil {
		t.Fatalf("before the rotation: %v", err)
	}
	if _, err := c.Rotate(ctx, "default", signetclient.RevokePrevious()); err != nil {
		t.Fatal(err)
	}
	fresh, err := c.Sign(ctx, "default", signetclient.Audience("svc"))
	if err != nil {
		t.Fatal(err)
	}
	if fresh.Kid == old.Kid {
		t.Fatal("the emergency rotation did not change the signing kid")
	}
	// The revoked kid leaves the cache at its next refresh, which max-age
	// schedules within a few seconds; an hour (MaxRefresh) would be the
	// bound if Cache-Control were ignored. (Nothing here forces a refresh:
	// the old kid is known to the cache.)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := v.Verify(ctx, old.Token); err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a token of a revoked kid still verifies 30s after the rotation: the JWKS's max-age of 1s was not followed")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if claims, err := v.Verify(ctx, fresh.Token); err != nil || claims.Kid != fresh.Kid {
		t.Fatalf("a token of the new kid: %v", err)
	}
}

// slowTransport delays every request once armed, to widen the window in
// which concurrent verifications wait for one JWKS fetch.
type slowTransport struct {
	armed atomic.Bool
	fetch atomic.Int32
}

func (s *slowTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if s.armed.Load() {
		s.fetch.Add(1)
		time.Sleep(300 * time.Millisecond)
	}
	return http.DefaultTransport.RoundTrip(r)
}

// TestVerifierConcurrentNewKid: tokens of a kid the Verifier's cached JWKS
// lacks (just after an emergency rotation), verified concurrently, all
// verify, and share one forced fetch of the JWKS.
func TestVerifierConcurrentNewKid(t *testing.T) {
	cfg := testConfig(t.TempDir())
	// An emergency rotation's version may wait for every replica to
	// publish it (2 × refresh_interval) before it signs: keep that short.
	cfg.KeyRings[0].RefreshInterval = config.Duration(time.Second)
	addr, jwks, stop, err := startSignet(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := stop(); err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := signetclient.New(signetclient.Config{Target: addr, Plaintext: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	slow := &slowTransport{}
	v, err := signetclient.NewVerifier(ctx, signetclient.VerifierConfig{JWKSURL: jwks, Issuer: exampleIssuer, Audience: "svc",
		HTTPClient: &http.Client{Transport: slow, Timeout: 30 * time.Second}, MinRefresh: time.Hour, MaxRefresh: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	rotated, err := c.Rotate(ctx, "default", signetclient.RevokePrevious())
	if err != nil {
		t.Fatal(err)
	}
	var tok *signetclient.Token
	for tok == nil {
		if tok, err = c.Sign(ctx, "default", signetclient.Audience("svc")); err != nil &&
			signetclient.ReasonOf(err) != signetv1.ErrorReason_NO_SIGNING_KEY {
			t.Fatal(err)
		}
	}
	if tok.Kid != rotated.Version.GetKid() {
		t.Fatalf("signed by %s, not by the rotation's %s", tok.Kid, rotated.Version.GetKid())
	}
	slow.armed.Store(true)
	const n = 8
	start := make(chan struct{})
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, err := v.Verify(ctx, tok.Token)
			errs <- err
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("a concurrent verification of the new kid: %v", err)
		}
	}
	if got := slow.fetch.Load(); got != 1 {
		t.Errorf("%d JWKS fetches for %d concurrent verifications of one new kid, want 1", got, n)
	}
}
