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
	cfg := config.Default()
	cfg.Issuer = exampleIssuer
	cfg.GRPC.Listen, cfg.HTTP.Listen, cfg.Admin.Listen = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.BackendTimeout = config.Duration(time.Minute)
	cfg.KeyRings[0].Backend = "local://" + dir
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, err := server.New(ctx, cfg, server.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer srv.Close()
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() {
		done <- srv.Serve(ctx, func(a server.Addrs) {
			exampleSignet, exampleJWKS = a.GRPC.String(), "http://"+a.HTTP.String()+server.JWKSPath
			close(ready)
		})
	}()
	select {
	case <-ready:
	case err := <-done:
		fmt.Fprintln(os.Stderr, "serve:", err)
		return 1
	}
	code := m.Run()
	cancel()
	if err := <-done; err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		return 1
	}
	return code
}
