package server

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

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
