package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/signet-dev/signet/backends"
	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
)

// Server is a configured Signet: backends opened, key set read, ready to serve.
type Server struct {
	cfg      Config
	log      *slog.Logger
	backends []backends.Signer
	closers  []io.Closer
	ks       *KeySet
	svc      *Service
}

// Options are what tests and embedders change beyond the config.
type Options struct {
	Logger *slog.Logger
	Now    func() time.Time
	Getenv func(string) string
}

// New opens the backends the config names (each URI once) and reads the key set.
func New(ctx context.Context, cfg Config, opts Options) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: log}
	opened := map[string]backends.Signer{}
	var specs []RingSpec
	for _, rc := range cfg.KeyRings {
		b, ok := opened[rc.Backend]
		if !ok {
			var err error
			b, err = backends.Open(ctx, rc.Backend, backends.OpenOptions{Logger: log, Getenv: opts.Getenv, Now: opts.Now})
			if err != nil {
				s.Close()
				return nil, fmt.Errorf("key ring %q: opening backend: %w", rc.Name, err)
			}
			opened[rc.Backend] = b
			s.backends = append(s.backends, b)
		}
		alg, _ := backends.ParseAlgorithm(rc.Algorithm) // validated
		specs = append(specs, RingSpec{Name: rc.Name, Algorithm: alg, Policy: rc.Policy(), Backend: b})
	}
	ks, err := NewKeySet(ctx, specs, KeySetOptions{Logger: log, Now: opts.Now,
		BackendTimeout: cfg.BackendTimeout.D(), StaleIfError: cfg.HTTP.JWKSStaleIfError.D()})
	if err != nil {
		s.Close()
		return nil, err
	}
	s.ks = ks
	s.svc = NewService(ks, cfg.Issuer, log)
	if err := s.setUpAccess(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// setUpAccess loads certificates, policy and audit sink.
func (s *Server) setUpAccess() error {
	a := s.svc.access
	if s.cfg.Audit.Path != "" {
		audit, closer, err := openAudit(s.cfg.Audit.Path)
		if err != nil {
			return err
		}
		a.audit = audit
		s.closers = append(s.closers, closer)
	}
	if !s.cfg.MTLS() {
		return nil
	}
	t := s.cfg.GRPC.TLS
	certs, err := newCertificates(t.CertFile, t.KeyFile, t.ClientCAFile, s.log)
	if err != nil {
		return err
	}
	rings := map[string]time.Duration{}
	for _, r := range s.ks.Rings() {
		rings[r.Name] = r.Policy.TokenMaxTTL
	}
	policy, err := newPolicyStore(s.cfg.PolicyFile, rings, s.log)
	if err != nil {
		return err
	}
	a.certs, a.policy = certs, policy
	return nil
}

// KeySet returns the server's key set.
func (s *Server) KeySet() *KeySet { return s.ks }

// Close closes the backends.
func (s *Server) Close() error {
	var errs []error
	for _, b := range s.backends {
		errs = append(errs, b.Close())
	}
	for _, c := range s.closers {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// Serve listens on the configured addresses and serves until ctx ends, then
// shuts down gracefully: in-flight RPCs and requests finish (within
// shutdown_timeout) and listeners close. ready, if not nil, is called with
// the bound addresses once both listeners are open.
func (s *Server) Serve(ctx context.Context, ready func(grpcAddr, httpAddr net.Addr)) error {
	grpcLis, err := net.Listen("tcp", s.cfg.GRPC.Listen)
	if err != nil {
		return fmt.Errorf("grpc.listen: %w", err)
	}
	httpLis, err := net.Listen("tcp", s.cfg.HTTP.Listen)
	if err != nil {
		grpcLis.Close()
		return fmt.Errorf("http.listen: %w", err)
	}

	a := s.svc.access
	opts := []grpc.ServerOption{
		grpc.ForceServerCodecV2(newRequestCodec()),
		grpc.ChainUnaryInterceptor(rejectMalformed, recoverUnary(s.log), logUnary(s.log), a.authenticateUnary),
	}
	if a.certs != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(a.certs.serverTLS())))
	}
	gs := grpc.NewServer(opts...)
	signetv1.RegisterSignerServiceServer(gs, s.svc)
	signetv1.RegisterKeySetServiceServer(gs, s.svc)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	hs.SetServingStatus(signetv1.SignerService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(signetv1.KeySetService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	reflection.Register(gs)

	handler, err := NewHTTPHandler(ctx, s.svc)
	if err != nil {
		grpcLis.Close()
		httpLis.Close()
		return err
	}
	hsrv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}

	if a.certs == nil {
		s.log.Warn("gRPC is in PLAINTEXT DEVELOPMENT MODE: no TLS and no caller authentication; it listens on loopback only",
			"grpc", grpcLis.Addr().String())
	} else {
		s.log.Info("gRPC requires mTLS (TLS 1.3, client certificates); policy in force", "policy_file", s.cfg.PolicyFile)
		stopWatch := make(chan struct{})
		defer close(stopWatch)
		go a.policy.watch(stopWatch, time.Second)
	}
	s.log.Info("serving", "grpc", grpcLis.Addr().String(), "http", httpLis.Addr().String(), "issuer", s.cfg.Issuer,
		"jwks", "http://"+httpLis.Addr().String()+JWKSPath)

	runCtx, stopRefresh := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRefresh()
	errc := make(chan error, 3)
	go func() { errc <- gs.Serve(grpcLis) }()
	go func() { errc <- hsrv.Serve(httpLis) }()
	refreshDone := make(chan struct{})
	go func() { s.ks.Run(runCtx); close(refreshDone) }()
	if ready != nil {
		ready(grpcLis.Addr(), httpLis.Addr())
	}

	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	s.log.Info("shutting down: finishing in-flight requests", "timeout", s.cfg.ShutdownTimeout.D().String())
	hs.Shutdown() // health checks now answer NOT_SERVING
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout.D())
	defer cancel()
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	httpErr := hsrv.Shutdown(shutdownCtx)
	select {
	case <-stopped:
	case <-shutdownCtx.Done():
		gs.Stop()
		<-stopped
	}
	stopRefresh()
	<-refreshDone
	if serveErr != nil && !errors.Is(serveErr, http.ErrServerClosed) && !errors.Is(serveErr, grpc.ErrServerStopped) {
		return serveErr
	}
	if httpErr != nil {
		return fmt.Errorf("http shutdown: %w", httpErr)
	}
	s.log.Info("stopped")
	return nil
}

// recoverUnary turns a panic into Internal and logs its stack.
func recoverUnary(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if p := recover(); p != nil {
				log.Error("panic in RPC", "method", info.FullMethod, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				err = status.Error(codes.Internal, "internal error (details are in the server log)")
			}
		}()
		return handler(ctx, req)
	}
}

// logUnary logs each RPC: failures the caller caused at info, server-side
// failures at warn, successes at debug (Rotate at info, by the service).
func logUnary(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := handler(ctx, req)
		code := status.Code(err)
		level := slog.LevelDebug
		switch code {
		case codes.OK:
		case codes.InvalidArgument, codes.NotFound, codes.Canceled, codes.PermissionDenied, codes.Unauthenticated:
			level = slog.LevelInfo
		default:
			level = slog.LevelWarn
		}
		if log.Enabled(ctx, level) {
			attrs := []any{"method", info.FullMethod, "code", code.String(), "duration", time.Since(start)}
			if err != nil {
				attrs = append(attrs, "err", status.Convert(err).Message())
			}
			log.Log(ctx, level, "rpc", attrs...)
		}
		return resp, err
	}
}
