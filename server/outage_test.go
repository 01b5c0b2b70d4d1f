package server

import (
	"context"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/signet-dev/signet/backends"
	"github.com/signet-dev/signet/backends/local"
	signetclient "github.com/signet-dev/signet/client"
	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
	"github.com/signet-dev/signet/server/config"
)

// flakyBackend is a local store whose calls can be made to hang until their
// context ends, the way a frozen remote backend behaves. (The remote
// backends' own tests freeze real servers; this checks the server's side.)
type flakyBackend struct {
	backends.Signer
	down     atomic.Bool
	delay    atomic.Int64 // nanoseconds every Sign waits first
	inFlight atomic.Int32
	// disableConflict: DisableVersion fails with KindConflict (another
	// replica changing the key at the same time).
	disableConflict atomic.Bool
}

func (f *flakyBackend) DisableVersion(ctx context.Context, r backends.KeyRing, id string) error {
	if f.disableConflict.Load() {
		return backends.Errorf(backends.KindConflict, "flaky-test", "the key is being changed")
	}
	return f.Signer.DisableVersion(ctx, r, id)
}

// flaky holds each opened flakyBackend by its directory (tests run in
// parallel, each with its own directory).
var flaky sync.Map

func flakyAt(dir string) *flakyBackend {
	f, _ := flaky.Load(dir)
	return f.(*flakyBackend)
}

func init() {
	backends.Register("flaky-test", func(ctx context.Context, u *url.URL, opts backends.OpenOptions) (backends.Signer, error) {
		s, err := local.Open(u.Path, opts)
		if err != nil {
			return nil, err
		}
		f := &flakyBackend{Signer: s}
		flaky.Store(u.Path, f)
		return f, nil
	})
}

func (f *flakyBackend) hang(ctx context.Context) error {
	if f.down.Load() {
		<-ctx.Done()
		return backends.Errorf(backends.KindUnavailable, "flaky-test", "no answer: %w", ctx.Err())
	}
	return nil
}

func (f *flakyBackend) Sign(ctx context.Context, r backends.KeyRing, id string, in []byte) ([]byte, error) {
	f.inFlight.Add(1)
	defer f.inFlight.Add(-1)
	time.Sleep(time.Duration(f.delay.Load()))
	if err := f.hang(ctx); err != nil {
		return nil, err
	}
	return f.Signer.Sign(ctx, r, id, in)
}

func (f *flakyBackend) Versions(ctx context.Context, r backends.KeyRing) ([]backends.Version, error) {
	if err := f.hang(ctx); err != nil {
		return nil, err
	}
	return f.Signer.Versions(ctx, r)
}

func (f *flakyBackend) CreateVersion(ctx context.Context, r backends.KeyRing, latest string) (backends.Version, error) {
	if err := f.hang(ctx); err != nil {
		return backends.Version{}, err
	}
	return f.Signer.CreateVersion(ctx, r, latest)
}

func TestBackendOutage(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	dir := t.TempDir()
	cfg.KeyRings[0].Backend = "flaky-test:" + dir
	cfg.BackendTimeout = config.Duration(30 * time.Second) // longer than the request deadline: the deadline must win
	ts := startServer(t, cfg, Options{})
	fb := flakyAt(dir)
	good := sign(t, ts, "default")
	_, jwksBefore := ts.get(t, JWKSPath)

	health := func() healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		h, err := healthpb.NewHealthClient(ts.conn).Check(ctxT(t), &healthpb.HealthCheckRequest{Service: "signet.v1.SignerService"})
		if err != nil {
			t.Fatal(err)
		}
		return h.GetStatus()
	}
	if got := health(); got != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("SignerService health before the outage: %v", got)
	}

	fb.down.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := ts.client.Sign(ctx, &signetv1.SignRequest{KeyRing: "default", Audience: []string{"x"}})
	if status.Code(err) != codes.Unavailable || ctx.Err() != nil {
		t.Fatalf("Sign while the backend hangs: %v (caller deadline passed: %v); want Unavailable before the deadline", err, ctx.Err())
	}
	if !strings.Contains(status.Convert(err).Message(), "did not answer in time") {
		t.Errorf("message %q does not say the backend did not answer", status.Convert(err).Message())
	}
	if e, _ := signetclient.ErrorOf(err); e == nil || e.Reason != signetv1.ErrorReason_BACKEND_UNAVAILABLE || e.RetryDelay != unavailableRetryDelay {
		t.Errorf("error details %+v, want BACKEND_UNAVAILABLE with RetryInfo %v", e, unavailableRetryDelay)
	}
	// One failed Sign is enough for gRPC clients to route around this replica.
	if got := health(); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("SignerService health right after a Sign found the backend down: %v, want NOT_SERVING", got)
	}
	_, err = ts.client.Rotate(ctx2s(t), &signetv1.RotateRequest{KeyRing: "default"})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("Rotate while the backend hangs: %v, want Unavailable", err)
	}
	// The JWKS keeps being served from the last good key set, and the
	// replica stays ready: readiness is about the JWKS.
	resp, body := ts.get(t, JWKSPath)
	if resp.StatusCode != 200 || string(body) != string(jwksBefore) {
		t.Errorf("JWKS during the outage: %d %s", resp.StatusCode, body)
	}
	if _, err := verify(t, body, good.GetToken()); err != nil {
		t.Errorf("a token signed before the outage no longer verifies: %v", err)
	}
	ks := ts.KeySet()
	ks.Tick(ctx2s(t), ks.Ring("default"))
	ks.Tick(ctx2s(t), ks.Ring("default"))
	ts.readyz(t, false)
	if body := ts.statusz(t); !strings.Contains(body, "backend unreachable") {
		t.Errorf("/statusz during the outage: %s; want the reason signing is down", body)
	}
	m := scrape(t, ts)
	if got := m.Value(t, "signet_key_ring_refresh_failures", "key_ring", "default"); got != 3 {
		t.Errorf("refresh failures after the Rotate's read and two ticks: %v, want 3", got)
	}
	if got := m.Value(t, "signet_key_ring_backend_down", "key_ring", "default"); got != 1 {
		t.Errorf("backend_down during the outage: %v", got)
	}

	fb.down.Store(false)
	after := sign(t, ts, "default")
	if _, err := verify(t, body, after.GetToken()); err != nil {
		t.Errorf("after recovery: %v", err)
	}
	if got := health(); got != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("SignerService health after a successful Sign: %v, want SERVING", got)
	}
	ks.Tick(ctx2s(t), ks.Ring("default"))
	ts.readyz(t, true)
	m = scrape(t, ts)
	if got := m.Value(t, "signet_key_ring_refresh_failures", "key_ring", "default"); got != 0 {
		t.Errorf("refresh failures after a good refresh: %v, want 0", got)
	}
	if got := m.Value(t, "signet_backend_call_duration_seconds_count", "backend", "flaky-test", "operation", "sign", "outcome", "unavailable"); got != 1 {
		t.Errorf("unavailable sign calls counted: %v, want 1", got)
	}
}

func ctx2s(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	t.Cleanup(cancel)
	return ctx
}
