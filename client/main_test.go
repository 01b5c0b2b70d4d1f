package signetclient_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"testing"
	"time"

	_ "github.com/signet-dev/signet/backends/local"
	"github.com/signet-dev/signet/server"
	"github.com/signet-dev/signet/server/config"
)

// The Signet the example talks to: the real server, in development mode
// (plaintext, loopback only), on the local backend in a temporary directory.
var exampleSignet, exampleJWKS string

const exampleIssuer = "https://signet.example"

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "signetclient-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	grpcAddr, jwks, stop, err := startSignet(testConfig(dir))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	exampleSignet, exampleJWKS = grpcAddr, jwks
	code := m.Run()
	if err := stop(); err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		return 1
	}
	return code
}

// testConfig is a development-mode config on loopback with one ES256 ring
// on the local backend in dir.
func testConfig(dir string) config.Config {
	cfg := config.Default()
	cfg.Issuer = exampleIssuer
	cfg.GRPC.Listen, cfg.HTTP.Listen, cfg.Admin.Listen = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.BackendTimeout = config.Duration(time.Minute)
	cfg.KeyRings[0].Backend = "local://" + dir
	return cfg
}

// startSignet runs a real Signet until stop.
func startSignet(cfg config.Config) (grpcAddr, jwksURL string, stop func() error, err error) {
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg, server.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		cancel()
		return "", "", nil, err
	}
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() {
		done <- srv.Serve(ctx, func(a server.Addrs) {
			grpcAddr, jwksURL = a.GRPC.String(), "http://"+a.HTTP.String()+server.JWKSPath
			close(ready)
		})
	}()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		srv.Close()
		return "", "", nil, fmt.Errorf("serve: %w", err)
	}
	return grpcAddr, jwksURL, func() error {
		cancel()
		err := <-done
		srv.Close()
		return err
	}, nil
}
