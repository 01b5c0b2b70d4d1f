package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/signet-dev/signet/server"
	"github.com/signet-dev/signet/server/config"
	"github.com/signet-dev/signet/server/telemetry"
)

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve", "[--config signet.yaml]",
		"Runs Signet. With no config file it uses the embedded local backend under ./signet-data,\n"+
			"one ES256 key ring \"default\", gRPC on 127.0.0.1:9090 (plaintext, loopback only) and\n"+
			"HTTP on 127.0.0.1:8080. docs/configuration.md documents every option.", stderr)
	configPath := fs.String("config", "", "YAML config file (default: built-in development config)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("serve takes no arguments, got %q", fs.Args())
	}
	cfg := config.Default()
	if *configPath != "" {
		var err error
		if cfg, err = config.Load(*configPath); err != nil {
			return err
		}
	}
	level, err := cfg.LogLevel()
	if err != nil {
		return err
	}
	hopts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(stderr, hopts)
	if cfg.Log.Format == "json" {
		h = slog.NewJSONHandler(stderr, hopts)
	}
	log := slog.New(h)

	tracing, err := telemetry.StartTracing(ctx, nil, telemetry.Version)
	if err != nil {
		return err
	}
	if tracing != nil {
		log.Info("tracing: exporting spans over OTLP as the OTEL_* environment says")
		defer func() {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err := tracing.Shutdown(ctx); err != nil {
				log.Warn("tracing: flushing spans at shutdown", "err", err)
			}
		}()
	}
	srv, err := server.New(ctx, cfg, server.Options{Logger: log, TracerProvider: tracing.TracerProvider()})
	if err != nil {
		return err
	}
	defer srv.Close()
	return srv.Serve(ctx, func(a server.Addrs) {
		printBanner(stdout, cfg, a.GRPC.String(), a.HTTP.String())
	})
}

func printBanner(w io.Writer, cfg config.Config, grpcAddr, httpAddr string) {
	ring := cfg.KeyRings[0].Name
	var b strings.Builder
	fmt.Fprintf(&b, "\nSignet is running (press Ctrl-C to stop).\n\n")
	fmt.Fprintf(&b, "  JWKS:       http://%s%s\n", httpAddr, server.JWKSPath)
	fmt.Fprintf(&b, "  Discovery:  http://%s%s\n", httpAddr, server.OpenIDConfigurationPath)
	mode := "plaintext development mode, loopback only"
	if cfg.MTLS() {
		mode = "mTLS: client certificates required, policy " + cfg.PolicyFile
	}
	fmt.Fprintf(&b, "  gRPC:       %s (%s)\n", grpcAddr, mode)
	fmt.Fprintf(&b, "  Issuer:     %s\n\n", cfg.Issuer)
	if cfg.MTLS() {
		fmt.Fprintf(&b, "Sign a token (with a client certificate the policy allows):\n  ./bin/signet sign --server %s --ca CA.pem --cert CLIENT.pem --key CLIENT-key.pem --key-ring %s --audience AUD\n\n", grpcAddr, ring)
	} else {
		fmt.Fprintf(&b, "Sign a token:\n  ./bin/signet sign --server %s --key-ring %s --audience my-service --subject alice\n\n", grpcAddr, ring)
		fmt.Fprintf(&b, "or with grpcurl:\n  grpcurl -plaintext -d '{\"key_ring\":\"%s\",\"audience\":[\"my-service\"],\"subject\":\"alice\"}' %s signet.v1.SignerService/Sign\n\n", ring, grpcAddr)
	}
	fmt.Fprintf(&b, "Verify it:\n  ./bin/signet verify --jwks http://%s%s TOKEN\n\n", httpAddr, server.JWKSPath)
	io.WriteString(w, b.String())
}
