package main

// The Go client (its own module, github.com/signet-dev/signet/client)
// against the real binary: the cached TokenSource through oauth2, gRPC
// credentials and an http.RoundTripper; the Verifier's middleware and
// interceptors with Signet's tokens and the ones they must refuse; the
// Verifier's JWKS cache; the client's retry rules on a real server's
// errors. client/'s own tests cannot start Signet: that module must not
// require the server.

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	signetclient "github.com/signet-dev/signet/client"
	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
)

// clientConfig is one ES256 ring whose versions publish and refresh within
// seconds, so that rotations take effect during a test.
func clientConfig(dataDir string) string {
	return fmt.Sprintf("%sbackend_timeout: 1m\nkey_rings:\n  - {name: default, backend: 'local://%s', algorithm: ES256, "+
		"token_max_ttl: 1m, token_default_ttl: 1m, jwks_max_age: 1s, refresh_interval: 1s, publish_ahead: 2s, retire_after: 63s}\n", configHead, dataDir)
}

// signCounter counts the Sign RPCs a client sends (retries included).
func signCounter(n *atomic.Int32) grpc.DialOption {
	return grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn,
		invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if method == signetv1.SignerService_Sign_FullMethodName {
			n.Add(1)
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	})
}

func goClient(t *testing.T, p *process, opts ...grpc.DialOption) *signetclient.Client {
	t.Helper()
	c, err := signetclient.New(signetclient.Config{Target: p.grpcAddr, Plaintext: true, DialOptions: opts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func (p *process) verifier(t *testing.T, cfg signetclient.VerifierConfig) *signetclient.Verifier {
	t.Helper()
	cfg.JWKSURL, cfg.Issuer = p.httpURL+"/.well-known/jwks.json", testIssuer
	v, err := signetclient.NewVerifier(ctxT(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v
}

// TestTokenSourceE2E: oauth2.NewClient, the Transport and a gRPC client
// with PerRPCCredentials, all on TokenSources of the real Signet, call a
// service behind the Verifier's middleware and interceptors; each source
// signs once for all its calls. Then tokens that must be refused are:
// another audience, another typ, expired, and a kid this Signet never
// published (from a second Signet).
func TestTokenSourceE2E(t *testing.T) {
	p := startSignetWith(t, clientConfig(t.TempDir()))
	var signs atomic.Int32
	c := goClient(t, p, signCounter(&signs))
	v := p.verifier(t, signetclient.VerifierConfig{Audience: "ledger"})

	var mu sync.Mutex
	var subjects []string
	seen := func(ctx context.Context) {
		claims, ok := signetclient.ClaimsFromContext(ctx)
		mu.Lock()
		defer mu.Unlock()
		if ok {
			subjects = append(subjects, claims.Subject)
		}
	}
	web := httptest.NewServer(v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen(r.Context()) })))
	defer web.Close()
	gs := grpc.NewServer(
		grpc.ChainUnaryInterceptor(v.UnaryServerInterceptor(), func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			seen(ctx)
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(v.StreamServerInterceptor()))
	healthpb.RegisterHealthServer(gs, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()

	getAll := func(name string, hc *http.Client) {
		for range 10 {
			resp, err := hc.Get(web.URL)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("%s: %s", name, resp.Status)
			}
		}
	}
	getAll("oauth2.NewClient", oauth2.NewClient(ctxT(t), c.TokenSource("default", signetclient.Audience("ledger"), signetclient.Subject("oauth2"))))
	getAll("Transport", &http.Client{Transport: &signetclient.Transport{AllowInsecure: true,
		Source: c.TokenSource("default", signetclient.Audience("ledger"), signetclient.Subject("transport"))}})
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(signetclient.PerRPCCredentials{AllowInsecure: true,
			Source: c.TokenSource("default", signetclient.Audience("ledger"), signetclient.Subject("grpc"))}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for range 10 {
		if _, err := healthpb.NewHealthClient(conn).Check(ctxT(t), &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatalf("gRPC with PerRPCCredentials: %v", err)
		}
	}
	if got := signs.Load(); got != 3 {
		t.Errorf("%d Signs for 30 calls through 3 TokenSources, want 3", got)
	}
	mu.Lock()
	if got := strings.Join(subjects, ","); got != strings.Repeat("oauth2,", 10)+strings.Repeat("transport,", 10)+strings.TrimSuffix(strings.Repeat("grpc,", 10), ",") {
		t.Errorf("subjects the handlers saw: %s", got)
	}
	subjects = nil
	mu.Unlock()

	other := startSignetWith(t, clientConfig(t.TempDir()))
	sign := func(c *signetclient.Client, opts ...signetclient.SignOption) string {
		tok, err := c.Sign(ctxT(t), "default", opts...)
		if err != nil {
			t.Fatal(err)
		}
		return tok.Token
	}
	bad := map[string]string{
		"wrong audience": sign(c, signetclient.Audience("billing")),
		"wrong typ":      sign(c, signetclient.Audience("ledger"), signetclient.Typ("at+jwt")),
		"unknown kid":    sign(goClient(t, other), signetclient.Audience("ledger")),
		"expired":        sign(c, signetclient.Audience("ledger"), signetclient.TTL(time.Second)),
	}
	time.Sleep(2500 * time.Millisecond) // past the 1s token's exp (whole seconds), no leeway
	for name, tok := range bad {
		req, _ := http.NewRequestWithContext(ctxT(t), http.MethodGet, web.URL, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 || resp.Header.Get("WWW-Authenticate") != `Bearer error="invalid_token"` {
			t.Errorf("HTTP, %s: %s %q, want 401 invalid_token", name, resp.Status, resp.Header.Get("WWW-Authenticate"))
		}
		bare, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		ctx := metadata.AppendToOutgoingContext(ctxT(t), "authorization", "Bearer "+tok)
		_, err = healthpb.NewHealthClient(bare).Check(ctx, &healthpb.HealthCheckRequest{})
		bare.Close()
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("gRPC, %s: %v, want Unauthenticated", name, err)
		}
	}
	// The wrong typ is the only thing wrong with that token: a verifier
	// that expects at+jwt takes it.
	atjwt := p.verifier(t, signetclient.VerifierConfig{Audience: "ledger", Typ: "application/AT+JWT"})
	if _, err := atjwt.Verify(ctxT(t), bad["wrong typ"]); err != nil {
		t.Errorf("an at+jwt token where at+jwt is expected: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(subjects) != 0 {
		t.Errorf("refused tokens reached the handlers: %v", subjects)
	}
}

// TestTokenSourceLoad: goroutines asking one TokenSource for a token
// as fast as they can, against the real Signet, cause one Sign per half (to
// 60%) of the token's 10s lifetime, not one per call. `go test -run
// TokenSourceLoad -v` prints the figures; SIGNET_TOKENSOURCE_LOAD=60s
// runs it for a minute.
func TestTokenSourceLoad(t *testing.T) {
	duration := 5 * time.Second
	if d, err := time.ParseDuration(os.Getenv("SIGNET_TOKENSOURCE_LOAD")); err == nil {
		duration = d
	}
	const goroutines, ttl = 100, 10 * time.Second
	p := startSignetWith(t, clientConfig(t.TempDir()))
	var signs atomic.Int32
	ts := goClient(t, p, signCounter(&signs)).TokenSource("default", signetclient.Audience("ledger"), signetclient.TTL(ttl))
	var calls, failures atomic.Int64
	var wg sync.WaitGroup
	ctx := ctxT(t)
	stop := time.Now().Add(duration)
	for range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				if tok, err := ts.TokenContext(ctx); err != nil || time.Until(tok.ExpiresAt) <= 0 {
					failures.Add(1)
				}
				calls.Add(1)
			}
		}()
	}
	wg.Wait()
	// A Sign at the start, then one every 50-60% of the lifetime the
	// TokenSource counts, ttl less a second (exp and iat are whole seconds).
	most := int32(duration/((ttl-time.Second)/2)) + 1
	t.Logf("%d goroutines for %v: %d token calls, %d Signs (at most %d allowed), %d failures", goroutines, duration, calls.Load(), signs.Load(), most, failures.Load())
	if failures.Load() != 0 {
		t.Errorf("%d calls failed or got an expired token", failures.Load())
	}
	if got := signs.Load(); got < 1 || got > most {
		t.Errorf("%d Signs, want 1 to %d", got, most)
	}
}

// TestVerifierFollowsCacheControl: the Verifier's JWKS cache refreshes as
// the JWKS's Cache-Control max-age says (1s here), not as its MaxRefresh
// (an hour): after an emergency rotation removes a kid from the JWKS, a
// token of that kid stops verifying within a few seconds.
func TestVerifierFollowsCacheControl(t *testing.T) {
	p := startSignetWith(t, clientConfig(t.TempDir()))
	ctx := ctxT(t)
	c := goClient(t, p)
	old, err := c.Sign(ctx, "default", signetclient.Audience("svc"))
	if err != nil {
		t.Fatal(err)
	}
	v := p.verifier(t, signetclient.VerifierConfig{Audience: "svc", MinRefresh: time.Second, MaxRefresh: time.Hour})
	if _, err := v.Verify(ctx, old.Token); err != nil {
		t.Fatalf("before the rotation: %v", err)
	}
	if _, err := c.Rotate(ctx, "default", signetclient.RevokePrevious()); err != nil {
		t.Fatal(err)
	}
	fresh := signNewKid(t, c)
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

// signNewKid signs once the version an emergency rotation created signs
// (it may wait for every replica to publish it, 2 × refresh_interval).
func signNewKid(t *testing.T, c *signetclient.Client) *signetclient.Token {
	t.Helper()
	for {
		tok, err := c.Sign(ctxT(t), "default", signetclient.Audience("svc"))
		if err == nil {
			return tok
		}
		if signetclient.ReasonOf(err) != signetv1.ErrorReason_NO_SIGNING_KEY {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
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
	p := startSignetWith(t, clientConfig(t.TempDir()))
	ctx := ctxT(t)
	c := goClient(t, p)
	slow := &slowTransport{}
	v := p.verifier(t, signetclient.VerifierConfig{Audience: "svc",
		HTTPClient: &http.Client{Transport: slow, Timeout: 30 * time.Second}, MinRefresh: time.Hour, MaxRefresh: time.Hour})
	rotated, err := c.Rotate(ctx, "default", signetclient.RevokePrevious())
	if err != nil {
		t.Fatal(err)
	}
	tok := signNewKid(t, c)
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

// TestClientNoRetryOnMessageTooLarge: a Sign larger than the server's gRPC
// message limit is ResourceExhausted from gRPC, not Signet's rate limit
// (no RATE_LIMITED, no RetryInfo): it would fail again, so it is not
// retried.
func TestClientNoRetryOnMessageTooLarge(t *testing.T) {
	p := startSignetWith(t, clientConfig(t.TempDir()))
	var attempts atomic.Int32
	c, err := signetclient.New(signetclient.Config{Target: p.grpcAddr, Plaintext: true, DialOptions: []grpc.DialOption{signCounter(&attempts)},
		Retry: signetclient.Retry{MaxAttempts: 3, InitialBackoff: 10 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	huge := `{"blob": "` + strings.Repeat("x", 5<<20) + `"}` // past gRPC's default 4 MiB
	_, err = c.Sign(ctxT(t), "default", signetclient.Audience("x"), signetclient.ClaimsJSON(huge))
	if e, ok := signetclient.ErrorOf(err); !ok || e.Code != codes.ResourceExhausted || e.RetryDelay != 0 {
		t.Fatalf("an oversized Sign: %v, want ResourceExhausted without RetryInfo", err)
	}
	if got := attempts.Load(); got != 1 {
		t.Errorf("%d attempts of an oversized Sign, want 1", got)
	}
}
