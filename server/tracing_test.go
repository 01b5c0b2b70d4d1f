package server

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// With a tracer provider, a Sign is a server span with the backend call as
// its child, and the audit line and the request log carry its trace id.
func TestSignIsTracedAndTheAuditLineCarriesTheTraceID(t *testing.T) {
	t.Parallel()
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	cfg := testConfig(t)
	cfg.Audit.Path = filepath.Join(t.TempDir(), "audit.log")
	ts := startServer(t, cfg, Options{TracerProvider: tp})
	resp := sign(t, ts, "default")

	var rpc, backend sdktrace.ReadOnlySpan
	for _, s := range spans.Ended() {
		switch s.Name() {
		case "signet.v1.SignerService/Sign":
			rpc = s
		case "backend sign":
			backend = s
		}
	}
	if rpc == nil || backend == nil {
		var names []string
		for _, s := range spans.Ended() {
			names = append(names, s.Name())
		}
		t.Fatalf("spans %v; want the Sign RPC and its backend call", names)
	}
	if backend.Parent().SpanID() != rpc.SpanContext().SpanID() || backend.SpanContext().TraceID() != rpc.SpanContext().TraceID() {
		t.Errorf("the backend span is not a child of the Sign span")
	}
	raw, err := os.ReadFile(cfg.Audit.Path)
	if err != nil {
		t.Fatal(err)
	}
	var rec map[string]any
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		json.Unmarshal([]byte(line), &rec)
		if rec["jti"] == resp.GetJti() {
			break
		}
	}
	if want := rpc.SpanContext().TraceID().String(); rec["trace_id"] != want {
		t.Errorf("audit line %v; want trace_id %s", rec, want)
	}
}
