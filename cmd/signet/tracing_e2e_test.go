package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"

	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
)

// traceReceiver is an OTLP/gRPC trace collector in the test process.
type traceReceiver struct {
	coltracepb.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []*tracepb.Span
}

func (r *traceReceiver) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			r.spans = append(r.spans, ss.GetSpans()...)
		}
	}
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

func (r *traceReceiver) named(name string) []*tracepb.Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*tracepb.Span
	for _, s := range r.spans {
		if s.GetName() == name {
			out = append(out, s)
		}
	}
	return out
}

// TestEndToEndTracing runs `signet serve` with the standard OTLP variables
// pointing at a collector in the test: a Sign arrives as a server span with
// the backend call as its child, and the audit line and the request log
// carry its trace id.
func TestEndToEndTracing(t *testing.T) {
	t.Parallel()
	recv := &traceReceiver{}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(gs, recv)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)

	audit := filepath.Join(t.TempDir(), "audit.log")
	p := startSignetWith(t, fmt.Sprintf("%saudit: {path: %s}\nkey_rings:\n  - {name: default, backend: 'local://%s'}\n",
		configHead, audit, t.TempDir()),
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://"+lis.Addr().String(), "OTEL_EXPORTER_OTLP_PROTOCOL=grpc",
		"OTEL_EXPORTER_OTLP_INSECURE=true", "OTEL_BSP_SCHEDULE_DELAY=100")
	resp, err := p.client.Sign(ctxT(t), &signetv1.SignRequest{KeyRing: "default", Subject: "svc", Audience: []string{"e2e"}})
	if err != nil {
		t.Fatal(err)
	}

	var rpc, backend *tracepb.Span
	waitFor(30*time.Second, func() bool {
		rpcs, calls := recv.named("signet.v1.SignerService/Sign"), recv.named("backend sign")
		if len(rpcs) == 1 && len(calls) == 1 {
			rpc, backend = rpcs[0], calls[0]
		}
		return rpc != nil
	})
	if rpc == nil {
		t.Fatalf("the collector got no Sign span with its backend call; got %d spans", len(recv.named("signet.v1.SignerService/Sign")))
	}
	if string(backend.GetParentSpanId()) != string(rpc.GetSpanId()) || string(backend.GetTraceId()) != string(rpc.GetTraceId()) {
		t.Errorf("the backend span is not a child of the Sign span")
	}
	traceID := hex.EncodeToString(rpc.GetTraceId())

	raw, err := os.ReadFile(audit)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["jti"] == resp.GetJti() {
			found = true
			if rec["trace_id"] != traceID {
				t.Errorf("audit line %s; want trace_id %s", line, traceID)
			}
		}
	}
	if !found {
		t.Errorf("no audit line for jti %s in:\n%s", resp.GetJti(), raw)
	}
	if !waitFor(5*time.Second, func() bool { return strings.Contains(p.stderr.String(), "trace_id="+traceID) }) {
		t.Errorf("no request log line carries trace_id=%s", traceID)
	}
}
