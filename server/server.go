package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/signet-dev/signet/backends"
	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
	"github.com/signet-dev/signet/server/authz"
	"github.com/signet-dev/signet/server/config"
	"github.com/signet-dev/signet/server/lifecycle"
	"github.com/signet-dev/signet/server/telemetry"
)

// Server is a configured Signet: backends opened, key set read, policy and
// certificates loaded, ready to serve.
type Server struct {
	cfg      config.Config
	log      *slog.Logger
	tp       trace.TracerProvider // nil: tracing off
	backends []backends.Signer
	ks       *lifecycle.KeySet
	authz    *authz.Authorizer
	jwks     *publisher
	svc      *service
	state    *keyState // the key set outside the process: state_dir and peers (peers.go)
	metrics  *telemetry.Metrics
	health   *health.Server
	// healthPub sets health's SignerService statuses (health.go).
	healthPub healthPublisher
	// kube serves the ExternalJWTSigner API (kubernetes_signer); nil
	// without one. Atomic: the key set's OnChange may read it while New
	// is still setting it.
	kube atomic.Pointer[kubeSigner]
}

// Options are what tests and embedders change beyond the config.
type Options struct {
	Logger *slog.Logger
	Now    func() time.Time
	Getenv func(string) string
	// TracerProvider, when set, traces every RPC and backend call (see
	// telemetry.StartTracing); nil: tracing off.
	TracerProvider trace.TracerProvider
}

// New opens the backends the config names (each URI once), reads the key
// set and loads the caller authorization, all before it returns.
func New(ctx context.Context, cfg config.Config, opts Options) (_ *Server, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: log, tp: opts.TracerProvider, metrics: telemetry.NewMetrics(), health: health.NewServer()}
	var tracer trace.Tracer
	if s.tp != nil {
		tracer = s.tp.Tracer("github.com/signet-dev/signet/server")
	}
	defer func() {
		if err != nil {
			_ = s.Close() // New's own error is the one to return; this only releases what it opened
		}
	}()
	opened := map[string]backends.Signer{}
	var specs []lifecycle.RingSpec
	for _, rc := range cfg.KeyRings {
		b, ok := opened[rc.Backend]
		if !ok {
			u, _, _ := backends.ParseURI(rc.Backend) // validated
			scheme := u.Scheme
			// A backend call is bounded by backend_timeout and the clean-up
			// of its own failure by as much again: evidence of an
			// interrupted rotation seen for longer than that is a crash's.
			b, err = backends.Open(ctx, rc.Backend, backends.OpenOptions{Logger: log, Getenv: opts.Getenv, Now: opts.Now,
				OnBatch: s.metrics.ObserveBatch, TracerProvider: s.tp, RecoveryGrace: 2 * cfg.BackendTimeout.D(), Timeout: cfg.BackendTimeout.D(),
				OnRecover: func(action string) { s.metrics.Recovered(scheme, action) }})
			if err != nil {
				return nil, fmt.Errorf("key ring %q: opening backend: %w", rc.Name, err)
			}
			s.backends = append(s.backends, b)
			s.metrics.InitRecovered(scheme)
			b = telemetry.Instrument(b, scheme, s.metrics, tracer)
			opened[rc.Backend] = b
		}
		alg, _ := backends.ParseAlgorithm(rc.Algorithm) // validated
		certs, err := certSpec(rc, cfg.Issuer, opts.Getenv)
		if err != nil {
			return nil, err
		}
		specs = append(specs, lifecycle.RingSpec{Name: rc.Name, Algorithm: alg, Schedule: rc.Schedule(), Backend: b,
			VerifySignatures: rc.Verify(), AllowBroadKeyUsage: rc.AllowBroadKeyUsage, CA: rc.IsCA(), Certificates: certs})
	}
	s.jwks = &publisher{staleIfError: cfg.HTTP.JWKSStaleIfError.D(), log: log, metrics: s.metrics, spiffe: newSPIFFESetup(cfg)}
	if s.state, err = newKeyState(cfg, log, opts.Now); err != nil {
		return nil, err
	}
	s.ks, err = lifecycle.New(ctx, specs, lifecycle.Options{Logger: log, Now: opts.Now,
		BackendTimeout: cfg.BackendTimeout.D(), OnChange: s.keysChanged, OnHealth: s.updateHealth,
		OnKeyMismatch: s.metrics.KeyMismatch, OnCertificateProblem: s.metrics.CertificateProblem,
		Fallback: s.state.fallback})
	if err != nil {
		return nil, err
	}
	s.state.save(s.ks)
	if err := s.jwks.start(s.ks); err != nil {
		return nil, err
	}
	t := cfg.GRPC.TLS
	s.authz, err = authz.New(authz.Config{CertFile: t.CertFile, KeyFile: t.KeyFile, ClientCAFile: t.ClientCAFile,
		PolicyFile: cfg.PolicyFile, AuditPath: cfg.Audit.Path, Rings: cfg.TokenMaxTTLs(), Now: opts.Now, Logger: log,
		OnReload: s.metrics.Reloaded, OnAuditHealth: s.updateHealth})
	if err != nil {
		return nil, err
	}
	s.metrics.Register(telemetry.NewKeySetCollector(s.ks))
	s.metrics.Register(telemetry.NewCertificateCollector(s.authz.CertificateExpiry))
	s.svc = newService(s.ks, s.authz, s.jwks, s.metrics, cfg.Issuer, log)
	if kc := cfg.KubernetesSigner; kc != nil {
		k, err := newKubeSigner(*kc, s.ks, s.svc, log)
		if err != nil {
			return nil, err
		}
		s.kube.Store(k)
	}
	s.health.SetServingStatus(keySetServiceName, healthpb.HealthCheckResponse_SERVING)
	s.updateHealth()
	return s, nil
}

// keysChanged re-renders what is published after the key set installed a
// snapshot: the JWKS and the ExternalJWTSigner's FetchKeys answer.
func (s *Server) keysChanged() {
	s.jwks.update()
	if s.ks != nil { // nil during New, which saves once it has the key set
		s.state.save(s.ks)
	}
	if k := s.kube.Load(); k != nil {
		if err := k.update(); err != nil {
			s.log.Error("cannot render the kubernetes_signer keys; serving the previous ones", "err", err)
		}
	}
}

// Reopen opens the audit file afresh and re-reads the policy and
// certificate files if they changed: what SIGHUP asks for after log
// rotation.
func (s *Server) Reopen() error {
	s.authz.Reload()
	return s.authz.ReopenAudit()
}

// KeySet returns the server's key set.
func (s *Server) KeySet() *lifecycle.KeySet { return s.ks }

// Close closes the backends and the audit log.
func (s *Server) Close() error {
	var errs []error
	for _, b := range s.backends {
		errs = append(errs, b.Close())
	}
	if s.authz != nil {
		errs = append(errs, s.authz.Close())
	}
	return errors.Join(errs...)
}

// streamWorkers is how many goroutines serve gRPC streams, kept from one
// request to the next. Without them every RPC runs on a new goroutine whose
// stack grows (copied) from 8 KiB to the ~32 KiB that a signature under
// gRPC and the interceptors needs: runtime.copystack was 10-16% of the
// server's CPU under load. Streams beyond the workers still get a goroutine
// of their own, as before. Workers take streams in turn and every GC
// shrinks idle workers' stacks, so more workers is not better: measured
// copystack with 128 was ~1% at 16 and 64 concurrent Signs and 4% at 256;
// with 256 workers 4-6% at all three.
const streamWorkers = 128

// Addrs are the addresses the server listens on; Admin is nil without an
// admin listener.
type Addrs struct {
	GRPC, HTTP, Admin net.Addr
	// KubernetesSigner is the ExternalJWTSigner socket; nil without one.
	KubernetesSigner net.Addr
}

// Serve listens on the configured addresses and serves until ctx ends, then
// shuts down gracefully: in-flight RPCs and requests finish (within
// shutdown_timeout) and listeners close. ready, if not nil, is called with
// the bound addresses once every listener is open.
func (s *Server) Serve(ctx context.Context, ready func(Addrs)) error {
	// closeAll closes the listeners opened so far when Serve cannot go on:
	// the error that stopped it is what the caller needs.
	closeAll := func(ls ...net.Listener) {
		for _, l := range ls {
			if l != nil {
				_ = l.Close()
			}
		}
	}
	rawGRPCLis, err := net.Listen("tcp", s.cfg.GRPC.Listen)
	if err != nil {
		return fmt.Errorf("grpc.listen: %w", err)
	}
	grpcLis := &limitListener{Listener: rawGRPCLis, max: int64(s.cfg.GRPC.Limits.MaxConnections), refused: s.metrics.ConnectionRefused}
	httpLis, err := net.Listen("tcp", s.cfg.HTTP.Listen)
	if err != nil {
		closeAll(grpcLis)
		return fmt.Errorf("http.listen: %w", err)
	}

	var adminLis net.Listener
	if s.cfg.Admin.Listen != "" {
		if adminLis, err = net.Listen("tcp", s.cfg.Admin.Listen); err != nil {
			closeAll(grpcLis, httpLis)
			return fmt.Errorf("admin.listen: %w", err)
		}
	}

	opts := append(grpcLimits(s.cfg.GRPC.Limits),
		grpc.NumStreamWorkers(streamWorkers),
		grpc.ForceServerCodecV2(newRequestCodec()),
		grpc.ChainUnaryInterceptor(recoverUnary(s.log), s.metrics.GRPC.UnaryServerInterceptor(), rejectMalformed,
			logUnary(s.log), requireCaller(s.authz)),
	)
	if tc := s.authz.ServerTLS(); tc != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tc)), grpc.InTapHandle(authenticateTap(s.authz, s.metrics)))
	}
	if s.tp != nil {
		opts = append(opts, grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithTracerProvider(s.tp))))
	}
	gs := grpc.NewServer(opts...)
	signetv1.RegisterSignerServiceServer(gs, s.svc)
	signetv1.RegisterKeySetServiceServer(gs, s.svc)
	if s.cfg.Peers.Enabled() { // mTLS only (config.validateStartup)
		signetv1.RegisterPeerServiceServer(gs, &peerService{state: s.state, log: s.log})
	}
	healthpb.RegisterHealthServer(gs, healthService{s.health})
	reflection.Register(gs)
	s.metrics.GRPC.InitializeMetrics(gs)

	var kubeLis net.Listener
	var kgs *grpc.Server
	if k := s.kube.Load(); k != nil {
		ul, err := listenUnix(k.cfg.Socket)
		if err != nil {
			closeAll(grpcLis, httpLis, adminLis)
			return err
		}
		kubeLis, kgs = ul, k.grpcServer(s)
	}
	handler, err := newHTTPHandler(ctx, s.svc, s.jwks, s.metrics)
	if err != nil {
		closeAll(grpcLis, httpLis, adminLis, kubeLis)
		return err
	}
	hsrv := newHTTPServer(handler, httpWriteTimeout, s.log)
	var asrv *http.Server
	if adminLis != nil {
		asrv = newHTTPServer(s.adminHandler(), adminWriteTimeout, s.log)
	}

	if s.authz.MTLS() {
		s.log.Info("gRPC requires mTLS (TLS 1.3, client certificates); policy in force", "policy_file", s.cfg.PolicyFile)
	} else {
		s.log.Warn("gRPC is in PLAINTEXT DEVELOPMENT MODE: no TLS and no caller authentication; it listens on loopback only",
			"grpc", grpcLis.Addr().String())
	}
	addrs := Addrs{GRPC: grpcLis.Addr(), HTTP: httpLis.Addr()}
	logAddrs := []any{"grpc", addrs.GRPC.String(), "http", addrs.HTTP.String()}
	if adminLis != nil {
		addrs.Admin = adminLis.Addr()
		logAddrs = append(logAddrs, "admin", addrs.Admin.String())
	}
	if kubeLis != nil {
		addrs.KubernetesSigner = kubeLis.Addr()
		logAddrs = append(logAddrs, "kubernetes_signer", addrs.KubernetesSigner.String(),
			"kubernetes_key_ring", s.cfg.KubernetesSigner.KeyRing)
	}
	s.log.Info("serving", append(logAddrs, "issuer", s.cfg.Issuer, "jwks", "http://"+httpLis.Addr().String()+JWKSPath)...)

	// The background loops outlive ctx until the listeners have drained.
	loopCtx, stopLoops := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLoops()
	errc := make(chan error, 4)
	go func() { errc <- gs.Serve(grpcLis) }()
	go func() { errc <- hsrv.Serve(httpLis) }()
	if asrv != nil {
		go func() { errc <- asrv.Serve(adminLis) }()
	}
	if kgs != nil {
		go func() { errc <- kgs.Serve(kubeLis) }()
	}
	loopsDone := make(chan struct{})
	go func() {
		defer close(loopsDone)
		done := make(chan struct{})
		go func() { s.authz.Run(loopCtx, time.Second); close(done) }()
		s.ks.Run(loopCtx)
		<-done
	}()
	if ready != nil {
		ready(addrs)
	}

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	s.log.Info("shutting down: finishing in-flight requests", "timeout", s.cfg.ShutdownTimeout.D().String())
	s.health.Shutdown() // health checks now answer NOT_SERVING
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout.D())
	defer cancel()
	stopped := make(chan struct{})
	go func() {
		if kgs != nil {
			kgs.GracefulStop() // removes the socket (SetUnlinkOnClose)
		}
		gs.GracefulStop()
		close(stopped)
	}()
	httpErr := hsrv.Shutdown(shutdownCtx)
	if asrv != nil {
		httpErr = errors.Join(httpErr, asrv.Shutdown(shutdownCtx))
	}
	select {
	case <-stopped:
	case <-shutdownCtx.Done():
		if kgs != nil {
			kgs.Stop()
		}
		gs.Stop()
		<-stopped
	}
	stopLoops()
	<-loopsDone
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) && !errors.Is(serveErr, grpc.ErrServerStopped) {
		return serveErr
	}
	if httpErr != nil {
		return fmt.Errorf("http shutdown: %w", httpErr)
	}
	s.log.Info("stopped")
	return nil
}
