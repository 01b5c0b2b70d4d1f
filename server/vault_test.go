package server

import (
	"net/url"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
	"github.com/signet-dev/signet/internal/vaulttest"
)

// On a real Vault, the backend's HTTP requests are spans under the backend
// call's, and every Transit sign request's batch size reaches the metrics.
func TestVaultCallsAreTracedAndBatchesMeasured(t *testing.T) {
	t.Parallel()
	v := vaulttest.Start(t)
	u, _ := url.Parse(v.Addr)
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	cfg := testConfig(t)
	cfg.KeyRings[0].Backend = "vault://" + u.Host + "/transit?scheme=http&key_prefix=signet-"
	ts := startServer(t, cfg, Options{TracerProvider: tp, Getenv: func(k string) string {
		if k == "VAULT_TOKEN" {
			return vaulttest.RootToken
		}
		return ""
	}})
	const signs = 3
	for range signs {
		sign(t, ts, "default")
	}

	var backendSign trace.SpanContext
	for _, s := range spans.Ended() {
		if s.Name() == "backend sign" {
			backendSign = s.SpanContext()
		}
	}
	if !backendSign.IsValid() {
		t.Fatal("no backend sign span")
	}
	var httpChildren int
	for _, s := range spans.Ended() {
		if s.Parent().SpanID() == backendSign.SpanID() && s.SpanKind() == trace.SpanKindClient {
			httpChildren++
		}
	}
	if httpChildren == 0 {
		t.Error("the Vault HTTP request of the last Sign is not a span under its backend call")
	}
	m := scrape(t, ts)
	if got := m.Value(t, "signet_vault_batch_size_count"); got != signs {
		t.Errorf("Transit sign requests measured: %v, want %d (one per sequential Sign)", got, signs)
	}
	if got := m.Value(t, "signet_vault_batch_size_sum"); got != signs {
		t.Errorf("signatures in them: %v, want %d", got, signs)
	}
}

// A Transit key deleted and re-created under the same name behind Signet's
// back: Sign refuses (the signature does not verify with the published
// key) instead of issuing tokens no verifier accepts, the JWKS stays as it
// was, and signing readiness names the ring.
func TestVaultKeyReplacedBehindSignetsBack(t *testing.T) {
	t.Parallel()
	v := vaulttest.Start(t)
	u, _ := url.Parse(v.Addr)
	cfg := testConfig(t)
	cfg.KeyRings[0].Backend = "vault://" + u.Host + "/transit?scheme=http&key_prefix=signet-"
	ts := startServer(t, cfg, Options{Getenv: func(k string) string {
		if k == "VAULT_TOKEN" {
			return vaulttest.RootToken
		}
		return ""
	}})
	good := sign(t, ts, "default")
	_, jwksBefore := ts.get(t, JWKSPath)

	v.Write(t, "transit/keys/signet-default/config", map[string]any{"deletion_allowed": true})
	if _, err := v.Root(t).Logical().Delete("transit/keys/signet-default"); err != nil {
		t.Fatal(err)
	}
	v.Write(t, "transit/keys/signet-default", map[string]any{"type": "ecdsa-p256"})

	_, err := ts.client.Sign(ctxT(t), &signetv1.SignRequest{KeyRing: "default", Audience: []string{"x"}})
	if codeOf(err) != codes.Internal {
		t.Fatalf("Sign with the key replaced: %v, want Internal", err)
	}
	ks := ts.KeySet()
	ks.Tick(ctxT(t), ks.Ring("default")) // the refresh sees version 1's new public key and refuses it
	if _, body := ts.get(t, JWKSPath); string(body) != string(jwksBefore) {
		t.Errorf("the JWKS changed to the replaced key:\n%s\nwas\n%s", body, jwksBefore)
	}
	if _, err := verify(t, jwksBefore, good.GetToken()); err != nil {
		t.Errorf("a token issued before the swap: %v", err)
	}
	ts.readyz(t, false)
	if body := ts.statusz(t); !strings.Contains(body, "key mismatch") {
		t.Errorf("/statusz: %s", body)
	}
	h, err := healthpb.NewHealthClient(ts.conn).Check(ctxT(t), &healthpb.HealthCheckRequest{Service: signerServiceName})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("SignerService health: %v %v", h.GetStatus(), err)
	}
	if got := scrape(t, ts).Value(t, "signet_key_mismatches_total", "key_ring", "default"); got < 2 {
		t.Errorf("key mismatches counted: %v, want the Sign's and the refresh's", got)
	}
}
