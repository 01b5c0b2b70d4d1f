package server

import (
	"net/url"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

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
