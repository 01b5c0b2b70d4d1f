package server

import (
	"context"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/signet-dev/signet/backends"
	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
)

// What grpcurl relies on: reflection lists the services, health answers.
func TestReflectionAndHealth(t *testing.T) {
	t.Parallel()
	ts := startServer(t, testConfig(t), Options{})
	stream, err := reflectionpb.NewServerReflectionClient(ts.conn).ServerReflectionInfo(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	for _, want := range []string{"signet.v1.SignerService", "signet.v1.KeySetService", "grpc.health.v1.Health"} {
		if !slices.Contains(names, want) {
			t.Errorf("reflection lists %v, missing %s", names, want)
		}
	}
	stream.CloseSend()
	for _, svc := range []string{"", "signet.v1.SignerService"} {
		h, err := healthpb.NewHealthClient(ts.conn).Check(ctxT(t), &healthpb.HealthCheckRequest{Service: svc})
		if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health of %q: %v, %v", svc, h.GetStatus(), err)
		}
	}
}

func TestHTTPSideIsPublicAndReadOnly(t *testing.T) {
	t.Parallel()
	ts := startServer(t, testConfig(t, backends.ES256, backends.EdDSA, backends.ES256), Options{})
	resp, body := ts.get(t, OpenIDConfigurationPath)
	var doc map[string]any
	if err := json.Unmarshal(body, &doc); err != nil || resp.StatusCode != 200 {
		t.Fatalf("discovery: %d %s", resp.StatusCode, body)
	}
	if doc["issuer"] != "http://127.0.0.1:8080" || doc["jwks_uri"] != "http://127.0.0.1:8080/.well-known/jwks.json" {
		t.Errorf("discovery document %s", body)
	}
	if algs, _ := json.Marshal(doc["id_token_signing_alg_values_supported"]); string(algs) != `["ES256","EdDSA"]` {
		t.Errorf("algorithms %s, want the distinct ring algorithms", algs)
	}
	if resp.Header.Get("Content-Type") != "application/json" || resp.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("discovery headers %v", resp.Header)
	}
	if r, _ := ts.get(t, JWKSPath); r.Header.Get("Access-Control-Allow-Origin") != "*" {
		t.Errorf("JWKS headers %v", r.Header)
	}
	if r, b := ts.get(t, "/healthz"); r.StatusCode != 200 || strings.TrimSpace(string(b)) != "ok" {
		t.Errorf("/healthz: %d %s", r.StatusCode, b)
	}
	if r, b := ts.get(t, "/readyz"); r.StatusCode != 200 || !strings.Contains(string(b), `"ready":true`) {
		t.Errorf("/readyz: %d %s", r.StatusCode, b)
	}
	// Nothing that signs, rotates or lists is reachable over HTTP.
	before := snapshotState(t, ts)
	for _, path := range []string{"/signet.v1.SignerService/Sign", "/signet.v1.SignerService/Rotate", "/v1/sign", "/v1/rotate", "/v1/keys"} {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			req, _ := http.NewRequest(method, ts.httpURL+path, strings.NewReader(`{"key_ring":"default","audience":["x"]}`))
			req.Header.Set("Content-Type", "application/json")
			r, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			r.Body.Close()
			if r.StatusCode != http.StatusNotFound && r.StatusCode != http.StatusMethodNotAllowed {
				t.Errorf("%s %s over HTTP: %d", method, path, r.StatusCode)
			}
		}
	}
	if after := snapshotState(t, ts); after != before {
		t.Error("HTTP requests changed the key set")
	}
}

// A slow backend call in flight when shutdown starts still completes.
func TestGracefulShutdownFinishesInFlightSign(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	dir := t.TempDir()
	cfg.KeyRings[0].Backend = "flaky-test:" + dir
	ctx, stop := context.WithCancel(context.Background())
	srv, err := New(ctx, cfg, Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ts, served := serve(t, ctx, srv)
	ts.dial(t)
	flakyAt(dir).delay.Store(int64(500 * time.Millisecond))

	signed := make(chan error, 1)
	go func() {
		_, err := ts.client.Sign(ctxT(t), &signetv1.SignRequest{KeyRing: "default", Audience: []string{"x"}})
		signed <- err
	}()
	for flakyAt(dir).inFlight.Load() == 0 {
		time.Sleep(5 * time.Millisecond) // until the Sign has reached the backend
	}
	stop()
	if err := <-signed; err != nil {
		t.Errorf("in-flight Sign during shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve: %v", err)
	}
	_, err = ts.client.Sign(ctxT(t), &signetv1.SignRequest{KeyRing: "default", Audience: []string{"x"}})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("Sign after shutdown: %v, want Unavailable", err)
	}
}
