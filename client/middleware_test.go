package signetclient_test

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	signetclient "github.com/signet-dev/signet/client"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func newClient(t *testing.T, addr string) *signetclient.Client {
	t.Helper()
	c, err := signetclient.New(signetclient.Config{Target: addr, Plaintext: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func newVerifier(t *testing.T, jwks string) *signetclient.Verifier {
	t.Helper()
	v, err := signetclient.NewVerifier(ctxT(t), signetclient.VerifierConfig{JWKSURL: jwks, Issuer: exampleIssuer, Audience: "ledger", MinRefresh: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v
}

// badTokens are the tokens a service must refuse, from s (and, for the
// unknown kid, from another Signet whose key s's JWKS lacks).
func badTokens(t *testing.T, s *testSignet) map[string]string {
	t.Helper()
	other := newTestSignet(t)
	sign := func(addr string, opts ...signetclient.SignOption) string {
		tok, err := newClient(t, addr).Sign(ctxT(t), "default", opts...)
		if err != nil {
			t.Fatal(err)
		}
		return tok.Token
	}
	good := sign(s.grpcAddr, signetclient.Audience("ledger"))
	return map[string]string{
		"wrong audience": sign(s.grpcAddr, signetclient.Audience("billing")),
		"wrong typ":      sign(s.grpcAddr, signetclient.Audience("ledger"), signetclient.Typ("at+jwt")),
		"expired":        sign(s.grpcAddr, signetclient.Audience("ledger"), signetclient.TTL(-time.Minute)),
		"unknown kid":    sign(other.grpcAddr, signetclient.Audience("ledger")),
		"bad signature":  good[:len(good)-4] + "AAAA",
		"not a JWT":      "not-a-jwt",
	}
}

// TestMiddleware: a request with a good token reaches the handler with its
// claims in the context; one without a token, or with a token of another
// audience, typ or key, or expired, gets 401 with a Bearer challenge.
func TestMiddleware(t *testing.T) {
	s := newTestSignet(t)
	v := newVerifier(t, s.jwksURL)
	h := v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		claims, ok := signetclient.ClaimsFromContext(r.Context())
		if !ok {
			http.Error(w, "no claims in the context", http.StatusInternalServerError)
			return
		}
		_, _ = io.WriteString(w, claims.Subject)
	}))
	srv := httptest.NewServer(h)
	defer srv.Close()
	get := func(auth ...string) (int, string, string) {
		req, _ := http.NewRequestWithContext(ctxT(t), http.MethodGet, srv.URL, nil)
		for _, a := range auth {
			req.Header.Add("Authorization", a)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("WWW-Authenticate"), string(body)
	}
	tok, err := newClient(t, s.grpcAddr).Sign(ctxT(t), "default", signetclient.Audience("ledger"), signetclient.Subject("payments"))
	if err != nil {
		t.Fatal(err)
	}
	if code, _, body := get("Bearer " + tok.Token); code != 200 || body != "payments" {
		t.Fatalf("a good token: %d %q", code, body)
	}
	if code, _, body := get("bearer " + tok.Token); code != 200 || body != "payments" {
		t.Fatalf("a good token, scheme in lower case: %d %q", code, body)
	}
	if code, _, body := get("BEARER   " + tok.Token); code != 200 || body != "payments" {
		t.Fatalf("a good token after several spaces (RFC 6750: 1*SP): %d %q", code, body)
	}
	for name, auth := range map[string][]string{"no header": nil, "basic": {"Basic dXNlcjpwYXNz"}, "two tokens": {"Bearer " + tok.Token, "Bearer " + tok.Token}} {
		if code, challenge, _ := get(auth...); code != 401 || challenge != "Bearer" {
			t.Errorf("%s: %d %q, want 401 with a Bearer challenge", name, code, challenge)
		}
	}
	for name, bad := range badTokens(t, s) {
		if code, challenge, body := get("Bearer " + bad); code != 401 || challenge != `Bearer error="invalid_token"` || strings.Contains(body, "payments") {
			t.Errorf("%s: %d %q %q, want 401 invalid_token", name, code, challenge, body)
		}
	}
}

// TestMiddlewareJWKSDown: when the JWKS cannot be fetched for a kid the
// cache lacks, the answer is 503, not a 401 that blames the caller's token.
func TestMiddlewareJWKSDown(t *testing.T) {
	s, other := newTestSignet(t), newTestSignet(t)
	var reasons []error
	var mu sync.Mutex
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer down.Close()
	v, err := signetclient.NewVerifier(ctxT(t), signetclient.VerifierConfig{JWKSURL: s.jwksURL, Issuer: exampleIssuer, Audience: "ledger",
		MinRefresh: time.Millisecond, HTTPClient: &http.Client{Transport: redirectAfterFirst(down.URL)},
		OnError: func(_ context.Context, err error) { mu.Lock(); reasons = append(reasons, err); mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	tok, err := newClient(t, other.grpcAddr).Sign(ctxT(t), "default", signetclient.Audience("ledger"))
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequestWithContext(ctxT(t), http.MethodGet, "/", nil)
	req.Header.Set("Authorization", "Bearer "+tok.Token)
	v.Middleware(http.NotFoundHandler()).ServeHTTP(rec, req)
	if rec.Code != http.StatusServiceUnavailable {
		t.Fatalf("JWKS down, unknown kid: %d, want 503", rec.Code)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(reasons) != 1 || !errors.Is(reasons[0], signetclient.ErrJWKSUnavailable) {
		t.Fatalf("OnError got %v, want one ErrJWKSUnavailable", reasons)
	}
}

// redirectAfterFirst sends the first request where it was going and every
// later one to url (a JWKS that went down after the Verifier started).
func redirectAfterFirst(url string) http.RoundTripper {
	var once sync.Once
	return roundTripFunc(func(r *http.Request) (*http.Response, error) {
		first := false
		once.Do(func() { first = true })
		if !first {
			r = r.Clone(r.Context())
			r.URL.Host, r.Host = strings.TrimPrefix(url, "http://"), ""
		}
		return http.DefaultTransport.RoundTrip(r)
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestInterceptors: a gRPC service behind the Verifier's unary and stream
// interceptors serves a call with a good token (sent by PerRPCCredentials
// on a TokenSource), with the claims in the handler's context, and refuses
// the others Unauthenticated.
func TestInterceptors(t *testing.T) {
	s := newTestSignet(t)
	v := newVerifier(t, s.jwksURL)
	var mu sync.Mutex
	var seen []string // the subjects the handlers saw in their context
	record := func(ctx context.Context) {
		if c, ok := signetclient.ClaimsFromContext(ctx); ok {
			mu.Lock()
			seen = append(seen, c.Subject)
			mu.Unlock()
		}
	}
	gs := grpc.NewServer(
		grpc.ChainUnaryInterceptor(v.UnaryServerInterceptor(), func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			record(ctx)
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(v.StreamServerInterceptor(), func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			record(ss.Context())
			return h(srv, ss)
		}))
	healthpb.RegisterHealthServer(gs, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()

	ts := newClient(t, s.grpcAddr).TokenSource("default", signetclient.Audience("ledger"), signetclient.Subject("payments"))
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(signetclient.PerRPCCredentials{Source: ts, AllowInsecure: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	for range 3 {
		if _, err := hc.Check(ctxT(t), &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatalf("unary with a good token: %v", err)
		}
	}
	stream, err := hc.Watch(ctxT(t), &healthpb.HealthCheckRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	if err != nil {
		t.Fatalf("stream with a good token: %v", err)
	}
	if got := s.signs.Load(); got != 1 {
		t.Errorf("%d Signs for 4 calls, want 1 (the TokenSource's cache)", got)
	}

	bare, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer bare.Close()
	bad := badTokens(t, s)
	bad["no token"] = ""
	for name, tok := range bad {
		ctx := ctxT(t)
		if tok != "" {
			ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
		}
		_, err := healthpb.NewHealthClient(bare).Check(ctx, &healthpb.HealthCheckRequest{})
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("unary, %s: %v, want Unauthenticated", name, err)
		}
		stream, err := healthpb.NewHealthClient(bare).Watch(ctx, &healthpb.HealthCheckRequest{})
		if err == nil {
			_, err = stream.Recv()
		}
		if status.Code(err) != codes.Unauthenticated {
			t.Errorf("stream, %s: %v, want Unauthenticated", name, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(seen, ",") != "payments,payments,payments,payments" {
		t.Errorf("the handlers saw subjects %v, want payments for each of the 4 good calls only", seen)
	}
}

// TestVerifyErrorBoundsTokenValues: the kid of a refused token,
// anyone's to choose, reach the service's logs (OnError) quoted and cut
// short: no forged log lines, no megabyte entries.
func TestVerifyErrorBoundsTokenValues(t *testing.T) {
	s := newTestSignet(t)
	v := newVerifier(t, s.jwksURL)
	evil := "x\nlevel=INFO msg=\"all good\"\n" + strings.Repeat("A", 1<<16)
	token := base64.RawURLEncoding.EncodeToString([]byte(`{"kid":`+strconv.Quote(evil)+`}`)) + ".e30.AAAA"
	_, err := v.Verify(ctxT(t), token)
	if err == nil {
		t.Fatal("a forged token verified")
	}
	if msg := err.Error(); strings.Contains(msg, "\n") || len(msg) > 512 {
		t.Errorf("the error carries the token's value raw (%d bytes): %.200q", len(msg), msg)
	}
}
