package server

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/signet-dev/signet/backends"
	_ "github.com/signet-dev/signet/backends/awskms"
	_ "github.com/signet-dev/signet/backends/local"
	_ "github.com/signet-dev/signet/backends/pkcs11"
	_ "github.com/signet-dev/signet/backends/vault"
	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
	"github.com/signet-dev/signet/server/config"
)

// testConfig is a loopback config with the local backend in a temp dir and
// one ring per algorithm given (the first is named "default").
func testConfig(t testing.TB, algs ...backends.Algorithm) config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.GRPC.Listen, cfg.HTTP.Listen, cfg.Admin.Listen = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	// Generating RSA-4096 keys on a loaded 2-core machine, with tests in
	// parallel, can take longer than the 5s default.
	cfg.BackendTimeout = config.Duration(time.Minute)
	dir := t.TempDir()
	cfg.KeyRings = nil
	if len(algs) == 0 {
		algs = []backends.Algorithm{backends.ES256}
	}
	for i, alg := range algs {
		r := config.DefaultRing
		r.Name, r.Backend, r.Algorithm = "default", "local://"+dir, string(alg)
		if i > 0 {
			r.Name = "ring-" + string(alg)
		}
		r.Name = lowerName(r.Name)
		cfg.KeyRings = append(cfg.KeyRings, r)
	}
	return cfg
}

func lowerName(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// testServer is a running Signet on loopback ports.
type testServer struct {
	*Server
	client   signetv1.SignerServiceClient
	keys     signetv1.KeySetServiceClient
	conn     *grpc.ClientConn
	httpURL  string
	adminURL string
	grpcAddr string
}

func testLogger(testing.TB) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func startServer(t testing.TB, cfg config.Config, opts Options) *testServer {
	t.Helper()
	ts := startServerNoDial(t, cfg, opts)
	ts.dial(t)
	return ts
}

// startServerNoDial starts the server without connecting a plaintext client.
func startServerNoDial(t testing.TB, cfg config.Config, optss ...Options) *testServer {
	t.Helper()
	var opts Options
	if len(optss) > 0 {
		opts = optss[0]
	}
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := New(ctx, cfg, opts)
	if err != nil {
		cancel()
		t.Fatalf("New: %v", err)
	}
	return serveUntilCleanup(t, ctx, cancel, srv)
}

// serveUntilCleanup serves srv, made by New with ctx, until the test ends.
func serveUntilCleanup(t testing.TB, ctx context.Context, cancel context.CancelFunc, srv *Server) *testServer {
	t.Helper()
	ts, done := serve(t, ctx, srv)
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve returned %v on shutdown", err)
		}
		srv.Close()
	})
	return ts
}

// serve runs srv until ctx ends and returns once it listens; done receives
// what Serve returned.
func serve(t testing.TB, ctx context.Context, srv *Server) (ts *testServer, done <-chan error) {
	t.Helper()
	ts = &testServer{Server: srv}
	ready, served := make(chan struct{}), make(chan error, 1)
	go func() {
		served <- srv.Serve(ctx, func(a Addrs) {
			ts.grpcAddr, ts.httpURL = a.GRPC.String(), "http://"+a.HTTP.String()
			if a.Admin != nil {
				ts.adminURL = "http://" + a.Admin.String()
			}
			close(ready)
		})
	}()
	select {
	case <-ready:
	case err := <-served:
		t.Fatalf("Serve: %v", err)
	}
	return ts, served
}

// dial connects the gRPC clients; the connection closes when the test ends.
func (ts *testServer) dial(t testing.TB) {
	t.Helper()
	conn, err := grpc.NewClient(ts.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ts.conn = conn
	ts.client = signetv1.NewSignerServiceClient(conn)
	ts.keys = signetv1.NewKeySetServiceClient(conn)
}

func (ts *testServer) get(t *testing.T, path string, header ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, ts.httpURL+path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}
