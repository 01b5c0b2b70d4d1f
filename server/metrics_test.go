package server

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/signet-dev/signet/backends"
	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
	"github.com/signet-dev/signet/server/telemetry/telemetrytest"
)

func scrape(t *testing.T, ts *testServer) telemetrytest.Metrics {
	t.Helper()
	return telemetrytest.Scrape(t, ts.adminURL+"/metrics")
}

// The metrics say what happened: their values, not only their presence.
func TestMetricsCountWhatHappened(t *testing.T) {
	t.Parallel()
	ts := startServer(t, testConfig(t, backends.ES256, backends.EdDSA), Options{})
	m := scrape(t, ts)
	if got := m.Value(t, "signet_build_info"); got != 1 {
		t.Errorf("build_info %v", got)
	}
	if got := m.Value(t, "signet_key_ring_versions", "key_ring", "default", "state", "active"); got != 1 {
		t.Errorf("active versions before anything happened: %v", got)
	}

	const signs = 7
	for range signs {
		sign(t, ts, "default")
	}
	sign(t, ts, "ring-eddsa")
	if _, err := ts.client.Sign(ctxT(t), &signetv1.SignRequest{KeyRing: "default"}); codeOf(err) != codes.InvalidArgument {
		t.Fatalf("a Sign without audience: %v", err)
	}
	rotate(t, ts, false)

	resp, _ := ts.get(t, JWKSPath)
	ts.get(t, JWKSPath)
	ts.get(t, JWKSPath, "If-None-Match", resp.Header.Get("ETag"))

	m = scrape(t, ts)
	if got := m.Value(t, "signet_tokens_issued_total", "key_ring", "default", "algorithm", "ES256"); got != signs {
		t.Errorf("tokens counted on default: %v, want %d", got, signs)
	}
	if got := m.Value(t, "signet_tokens_issued_total", "key_ring", "ring-eddsa", "algorithm", "EdDSA"); got != 1 {
		t.Errorf("tokens counted on ring-eddsa: %v, want 1", got)
	}
	if got := m.Value(t, "signet_grpc_server_handled_total", "grpc_method", "Sign", "grpc_code", "OK"); got != signs+1 {
		t.Errorf("gRPC Sign OK: %v, want %d", got, signs+1)
	}
	if got := m.Value(t, "signet_grpc_server_handled_total", "grpc_method", "Sign", "grpc_code", "InvalidArgument"); got != 1 {
		t.Errorf("gRPC Sign InvalidArgument: %v, want 1", got)
	}
	if got := m.Value(t, "signet_grpc_server_handling_seconds_count", "grpc_method", "Rotate"); got != 1 {
		t.Errorf("Rotate handling-time observations: %v, want 1", got)
	}
	if got := m.Value(t, "signet_key_ring_versions", "key_ring", "default", "state", "pending"); got != 1 {
		t.Errorf("pending versions after Rotate: %v, want 1", got)
	}
	if got := m.Value(t, "signet_backend_call_duration_seconds_count", "backend", "local", "operation", "sign", "outcome", "ok"); got != signs+1 {
		t.Errorf("backend sign calls: %v, want %d", got, signs+1)
	}
	if got := m.Value(t, "signet_backend_call_duration_seconds_count", "backend", "local", "operation", "create_version", "outcome", "ok"); got != 3 {
		t.Errorf("backend create_version calls: %v, want 3 (two first versions and one rotation)", got)
	}
	if got := m.Value(t, "signet_jwks_responses_total", "code", "200"); got != 2 {
		t.Errorf("JWKS 200s: %v, want 2", got)
	}
	if got := m.Value(t, "signet_jwks_responses_total", "code", "304"); got != 1 {
		t.Errorf("JWKS 304s: %v, want 1", got)
	}
	if got := m.Value(t, "signet_jwks_info", "etag", resp.Header.Get("ETag")); got != 1 {
		t.Errorf("jwks_info for the served ETag: %v", got)
	}
	if got := m.Value(t, "signet_jwks_keys"); got != 3 {
		t.Errorf("jwks_keys %v, want 3", got)
	}
	if got := m.Value(t, "signet_key_ring_last_refresh_success_timestamp_seconds", "key_ring", "default"); got <= 0 {
		t.Errorf("last refresh %v", got)
	}
	if _, ok := m["signet_key_ring_next_rotation_timestamp_seconds"]; ok {
		t.Error("a next-rotation time for rings with manual rotation only")
	}
}

// The admin side is on its own port: nothing of it on the public one, and
// pprof only when asked for.
func TestAdminListener(t *testing.T) {
	t.Parallel()
	ts := startServer(t, testConfig(t), Options{})
	for _, path := range []string{"/metrics", StatusPath, "/debug/pprof/"} {
		if r, _ := ts.get(t, path); r.StatusCode != http.StatusNotFound {
			t.Errorf("%s on the public port: %d", path, r.StatusCode)
		}
	}
	status := func(url string, header ...string) (int, http.Header) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
		return r.StatusCode, r.Header
	}
	if code, _ := status(ts.adminURL + "/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("pprof without admin.pprof: %d", code)
	}
	if code, _ := status(ts.adminURL + StatusPath); code != http.StatusOK {
		t.Errorf("/statusz: %d", code)
	}
	if _, h := status(ts.adminURL+"/metrics", "Accept", "application/openmetrics-text; version=1.0.0"); !strings.HasPrefix(h.Get("Content-Type"), "application/openmetrics-text") {
		t.Errorf("OpenMetrics negotiation: %v", h.Get("Content-Type"))
	}

	cfg := testConfig(t)
	cfg.Admin.Pprof = true
	withPprof := startServer(t, cfg, Options{})
	if code, _ := status(withPprof.adminURL + "/debug/pprof/"); code != http.StatusOK {
		t.Errorf("pprof with admin.pprof: %d", code)
	}
}
