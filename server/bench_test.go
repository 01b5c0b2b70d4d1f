package server

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/signet-dev/signet/backends"
	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
)

// BenchmarkSign compares Signet's Sign path (checks, claims, authorization,
// JOSE assembly, state lookup, audit) with the bare signature it wraps; the
// difference is what Signet adds. Design goal: no more than ~50µs.
func BenchmarkSign(b *testing.B) {
	for _, alg := range []backends.Algorithm{backends.ES256, backends.EdDSA, backends.RS256} {
		srv, err := New(context.Background(), testConfig(b, alg), Options{})
		if err != nil {
			b.Fatal(err)
		}
		ks := srv.KeySet()
		r := ks.Ring("default")
		req := &signetv1.SignRequest{KeyRing: "default", Subject: "svc-a", Audience: []string{"svc-b"},
			Claims: mustStruct(map[string]any{"scope": "read write", "tenant": "t-42"})}
		b.Run(string(alg)+"/bare-signature", func(b *testing.B) {
			v, err := ks.Active(r)
			if err != nil {
				b.Fatal(err)
			}
			input := []byte("eyJhbGciOiJFUzI1NiJ9.eyJpc3MiOiJ4In0")
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ks.SignWith(context.Background(), r, v, input); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(string(alg)+"/Sign", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := srv.svc.Sign(context.Background(), req); err != nil {
					b.Fatal(err)
				}
			}
		})
		srv.Close()
		// The same with every signature checked against the published key
		// before the token leaves (verify_signatures, on by default for
		// remote backends): the difference is what that check costs.
		cfg := testConfig(b, alg)
		verify := true
		cfg.KeyRings[0].VerifySignatures = &verify
		checked, err := New(context.Background(), cfg, Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(string(alg)+"/Sign-verified", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := checked.svc.Sign(context.Background(), req); err != nil {
					b.Fatal(err)
				}
			}
		})
		checked.Close()
	}
}

// BenchmarkJWKS serves the JWKS through the gateway handler in process.
func BenchmarkJWKS(b *testing.B) {
	srv, err := New(context.Background(), testConfig(b, backends.ES256, backends.RS256, backends.EdDSA), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	h, err := newHTTPHandler(context.Background(), srv.svc, srv.jwks, srv.metrics)
	if err != nil {
		b.Fatal(err)
	}
	req := httptest.NewRequest(http.MethodGet, JWKSPath, nil)
	b.ReportAllocs()
	for b.Loop() {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != 200 {
			b.Fatal(w.Code)
		}
	}
}

func mustStruct(m map[string]any) *structpb.Struct {
	s, err := structpb.NewStruct(m)
	if err != nil {
		panic(err)
	}
	return s
}

// BenchmarkSignGRPC is Sign as callers meet it: over a real gRPC connection
// on loopback, from 4×GOMAXPROCS concurrent callers, through every
// interceptor, the metrics and the audit-free development mode. Compare it
// with BenchmarkHealthGRPC, the floor of a gRPC round trip on this machine.
func BenchmarkSignGRPC(b *testing.B) {
	ts := startServer(b, testConfig(b), Options{})
	req := &signetv1.SignRequest{KeyRing: "default", Subject: "svc-a", Audience: []string{"svc-b"},
		Claims: mustStruct(map[string]any{"scope": "read write"})}
	ctx := ctxT(b)
	b.ReportAllocs()
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := ts.client.Sign(ctx, req); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkHealthGRPC is a gRPC health check over the same kind of
// connection: what any RPC costs before Signet does anything.
func BenchmarkHealthGRPC(b *testing.B) {
	ts := startServer(b, testConfig(b), Options{})
	client := healthpb.NewHealthClient(ts.conn)
	ctx := ctxT(b)
	b.ReportAllocs()
	b.SetParallelism(4)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
