package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/signet-dev/signet/server"
	"github.com/signet-dev/signet/server/config"
	"github.com/signet-dev/signet/server/telemetry"
)

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("serve", "[--config signet.yaml] [--ready-file PATH] [--check]",
		"Runs Signet. With no config file it uses the embedded local backend under ./signet-data,\n"+
			"one ES256 key ring \"default\", gRPC on 127.0.0.1:9090 (plaintext, loopback only) and\n"+
			"HTTP on 127.0.0.1:8080. docs/configuration.md documents every option.\n\n"+
			"A listen address with port 0 (e.g. 127.0.0.1:0) takes a free port; --ready-file tells\n"+
			"which: once both listeners are bound it is written (atomically) as\n"+
			"{\"grpc\":\"127.0.0.1:NNNN\",\"http\":\"127.0.0.1:MMMM\",\"admin\":\"127.0.0.1:KKKK\"},\n"+
			"and it is removed when serve exits.", stderr)
	configPath := fs.String("config", "", "YAML config file (default: built-in development config)")
	readyFile := fs.String("ready-file", "", "once listening, write the bound gRPC and HTTP addresses to this JSON file")
	check := fs.Bool("check", false, "check the config and policy file as check-config does, then exit without serving")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("serve takes no arguments, got %q", fs.Args())
	}
	if *check {
		return checkConfig(*configPath, "", stdout)
	}
	cfg := config.Default()
	if *configPath != "" {
		var err error
		if cfg, err = config.Load(*configPath); err != nil {
			return err
		}
	}
	if *readyFile != "" {
		// Fail before opening backends if the file cannot be written, and
		// never leave a previous run's addresses for a waiter to find.
		if err := removeReadyFile(*readyFile); err != nil {
			return err
		}
		defer os.Remove(*readyFile)
	}
	level, err := cfg.LogLevel()
	if err != nil {
		return err
	}
	tuneGC(os.Getenv)
	hopts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(stderr, hopts)
	if cfg.Log.Format == "json" {
		h = slog.NewJSONHandler(stderr, hopts)
	}
	log := slog.New(h)

	tracing, err := telemetry.StartTracing(ctx, nil, telemetry.Build().Version)
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
	// SIGHUP: log rotation moved the audit file (logrotate's postrotate);
	// open it afresh, and re-read the policy and certificates if changed.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	hupDone := make(chan struct{})
	defer close(hupDone)
	go func() {
		for {
			select {
			case <-hupDone:
				return
			case <-hup:
				log.Info("SIGHUP: reopening the audit log")
				if err := srv.Reopen(); err != nil {
					log.Error("SIGHUP: the audit log cannot be reopened; the open one stays", "err", err)
				}
			}
		}
	}()
	// A ready file that cannot be written stops the server: whoever waits
	// for it would otherwise wait forever.
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	var readyErr error
	err = srv.Serve(ctx, func(a server.Addrs) {
		addrs := readyAddrs{GRPC: a.GRPC.String(), HTTP: a.HTTP.String()}
		if a.Admin != nil {
			addrs.Admin = a.Admin.String()
		}
		if a.KubernetesSigner != nil {
			addrs.KubernetesSigner = a.KubernetesSigner.String()
		}
		printBanner(stdout, cfg, addrs)
		if *readyFile == "" {
			return
		}
		if readyErr = writeReadyFile(*readyFile, addrs); readyErr != nil {
			log.Error("stopping: cannot write the ready file", "path", *readyFile, "err", readyErr)
			stop()
			return
		}
		// The server's "serving" line already holds the addresses.
		log.Info("wrote the ready file", "path", *readyFile)
	})
	return errors.Join(readyErr, err)
}

// readyAddrs is the content of --ready-file.
type readyAddrs struct {
	GRPC  string `json:"grpc"`
	HTTP  string `json:"http"`
	Admin string `json:"admin,omitempty"` // absent without an admin listener
	// KubernetesSigner is the ExternalJWTSigner socket's path; absent
	// without kubernetes_signer.
	KubernetesSigner string `json:"kubernetes_signer,omitempty"`
}

// writeReadyFile writes the addresses to a temporary file beside path and
// renames it into place, so that a reader sees the whole file or none.
func writeReadyFile(path string, addrs readyAddrs) error {
	b, err := json.Marshal(addrs)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("--ready-file: %w", err)
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Chmod(0o644)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		_ = os.Remove(f.Name()) // the temporary file, which failed to become the ready file; that failure is the error
		return fmt.Errorf("--ready-file: %w", err)
	}
	return nil
}

// removeReadyFile removes path if it exists, and checks that its directory
// does, so that the ready file can be written later.
func removeReadyFile(path string) error {
	if st, err := os.Lstat(path); err == nil && st.IsDir() {
		return fmt.Errorf("--ready-file: %s is a directory", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("--ready-file: %w", err)
	}
	if st, err := os.Stat(filepath.Dir(path)); err != nil {
		return fmt.Errorf("--ready-file: %w", err)
	} else if !st.IsDir() {
		return fmt.Errorf("--ready-file: %s is not a directory", filepath.Dir(path))
	}
	return nil
}

func printBanner(w io.Writer, cfg config.Config, addrs readyAddrs) {
	grpcAddr, httpAddr := addrs.GRPC, addrs.HTTP
	ring := cfg.KeyRings[0].Name
	var b strings.Builder
	fmt.Fprintf(&b, "\nSignet is running (press Ctrl-C to stop).\n\n")
	fmt.Fprintf(&b, "  JWKS:       http://%s%s\n", httpAddr, server.JWKSPath)
	fmt.Fprintf(&b, "  Discovery:  http://%s%s\n", httpAddr, server.OpenIDConfigurationPath)
	if td := cfg.SPIFFE.TrustDomain; td != "" {
		fmt.Fprintf(&b, "  SPIFFE:     http://%s%s (bundle of trust domain %s)\n", httpAddr, server.SPIFFEBundlePath, td)
	}
	mode := "plaintext development mode, loopback only"
	if cfg.MTLS() {
		mode = "mTLS: client certificates required, policy " + cfg.PolicyFile
	}
	fmt.Fprintf(&b, "  gRPC:       %s (%s)\n", grpcAddr, mode)
	fmt.Fprintf(&b, "  Issuer:     %s\n", cfg.Issuer)
	if k := cfg.KubernetesSigner; k != nil && addrs.KubernetesSigner != "" {
		fmt.Fprintf(&b, "  Kubernetes: ExternalJWTSigner on %s (key ring %s, issuer %s)\n", addrs.KubernetesSigner, k.KeyRing, k.Issuer)
	}
	if addrs.Admin != "" {
		fmt.Fprintf(&b, "  Metrics:    http://%s/metrics    Status: http://%s%s\n", addrs.Admin, addrs.Admin, server.StatusPath)
	}
	b.WriteString("\n")
	if cfg.MTLS() {
		fmt.Fprintf(&b, "Sign a token (with a client certificate the policy allows):\n  ./bin/signet sign --server %s --ca CA.pem --cert CLIENT.pem --key CLIENT-key.pem --key-ring %s --audience AUD\n\n", grpcAddr, ring)
	} else {
		fmt.Fprintf(&b, "Sign a token:\n  ./bin/signet sign --server %s --key-ring %s --audience my-service --subject alice\n\n", grpcAddr, ring)
		fmt.Fprintf(&b, "or with grpcurl:\n  grpcurl -plaintext -d '{\"key_ring\":\"%s\",\"audience\":[\"my-service\"],\"subject\":\"alice\"}' %s signet.v1.SignerService/Sign\n\n", ring, grpcAddr)
	}
	fmt.Fprintf(&b, "Verify it:\n  ./bin/signet verify --jwks http://%s%s TOKEN\n\n", httpAddr, server.JWKSPath)
	_, _ = io.WriteString(w, b.String()) // a courtesy for the developer: a closed stdout must not stop the server
}

// GC defaults for serve, each unless the environment sets its own (GOGC,
// GOMEMLIMIT). Signet's live heap is a few MiB (keys, the JWKS, the
// connections) while every Sign allocates ~10 KiB, most of it inside
// crypto/ecdsa: at GOGC=100 the collector ran dozens of times a second under
// load, and each cycle also shrank the stacks of the idle gRPC stream
// workers, which the next request then grew again (runtime.copystack in the
// profile). Collecting at 4x the live heap, inside a soft limit that keeps
// resident memory bounded, removes most of both.
const (
	defaultGCPercent   = 400
	defaultMemoryLimit = 32 << 20 // Go's own memory (heap, stacks), not the binary's pages
)

func tuneGC(getenv func(string) string) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
	}
	if getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
}
