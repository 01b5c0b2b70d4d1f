package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

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
)

// Server is a configured Signet: backends opened, key set read, policy and
// certificates loaded, ready to serve.
type Server struct {
	cfg      config.Config
	log      *slog.Logger
	backends []backends.Signer
	ks       *lifecycle.KeySet
	authz    *authz.Authorizer
	jwks     *publisher
	svc      *service
}

// Options are what tests and embedders change beyond the config.
type Options struct {
	Logger *slog.Logger
	Now    func() time.Time
	Getenv func(string) string
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
	s := &Server{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	opened := map[string]backends.Signer{}
	var specs []lifecycle.RingSpec
	maxTTLs := map[string]time.Duration{}
	for _, rc := range cfg.KeyRings {
		b, ok := opened[rc.Backend]
		if !ok {
			b, err = backends.Open(ctx, rc.Backend, backends.OpenOptions{Logger: log, Getenv: opts.Getenv, Now: opts.Now})
			if err != nil {
				return nil, fmt.Errorf("key ring %q: opening backend: %w", rc.Name, err)
			}
			opened[rc.Backend] = b
			s.backends = append(s.backends, b)
		}
		alg, _ := backends.ParseAlgorithm(rc.Algorithm) // validated
		specs = append(specs, lifecycle.RingSpec{Name: rc.Name, Algorithm: alg, Schedule: rc.Schedule(), Backend: b})
		maxTTLs[rc.Name] = rc.TokenMaxTTL.D()
	}
	s.jwks = &publisher{staleIfError: cfg.HTTP.JWKSStaleIfError.D(), log: log}
	s.ks, err = lifecycle.New(ctx, specs, lifecycle.Options{Logger: log, Now: opts.Now,
		BackendTimeout: cfg.BackendTimeout.D(), OnChange: s.jwks.update})
	if err != nil {
		return nil, err
	}
	if err := s.jwks.start(s.ks); err != nil {
		return nil, err
	}
	t := cfg.GRPC.TLS
	s.authz, err = authz.New(authz.Config{CertFile: t.CertFile, KeyFile: t.KeyFile, ClientCAFile: t.ClientCAFile,
		PolicyFile: cfg.PolicyFile, AuditPath: cfg.Audit.Path, Rings: maxTTLs, Now: opts.Now, Logger: log})
	if err != nil {
		return nil, err
	}
	s.svc = newService(s.ks, s.authz, s.jwks, cfg.Issuer, log)
	return s, nil
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

	opts := []grpc.ServerOption{
		grpc.ForceServerCodecV2(newRequestCodec()),
		grpc.ChainUnaryInterceptor(recoverUnary(s.log), rejectMalformed, logUnary(s.log), authenticate(s.authz)),
	}
	if tc := s.authz.ServerTLS(); tc != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
	}
	gs := grpc.NewServer(opts...)
	signetv1.RegisterSignerServiceServer(gs, s.svc)
	signetv1.RegisterKeySetServiceServer(gs, s.svc)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	hs.SetServingStatus(signetv1.SignerService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(signetv1.KeySetService_ServiceDesc.ServiceName, healthpb.HealthCheckResponse_SERVING)
	reflection.Register(gs)

	handler, err := newHTTPHandler(ctx, s.svc, s.jwks, s.ks)
	if err != nil {
		grpcLis.Close()
		httpLis.Close()
		return err
	}
	hsrv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)}

	if s.authz.MTLS() {
		s.log.Info("gRPC requires mTLS (TLS 1.3, client certificates); policy in force", "policy_file", s.cfg.PolicyFile)
	} else {
		s.log.Warn("gRPC is in PLAINTEXT DEVELOPMENT MODE: no TLS and no caller authentication; it listens on loopback only",
			"grpc", grpcLis.Addr().String())
	}
	s.log.Info("serving", "grpc", grpcLis.Addr().String(), "http", httpLis.Addr().String(), "issuer", s.cfg.Issuer,
		"jwks", "http://"+httpLis.Addr().String()+JWKSPath)

	// The background loops outlive ctx until the listeners have drained.
	loopCtx, stopLoops := context.WithCancel(context.WithoutCancel(ctx))
	defer stopLoops()
	errc := make(chan error, 2)
	go func() { errc <- gs.Serve(grpcLis) }()
	go func() { errc <- hsrv.Serve(httpLis) }()
	loopsDone := make(chan struct{})
	go func() {
		defer close(loopsDone)
		done := make(chan struct{})
		go func() { s.authz.Run(loopCtx, time.Second); close(done) }()
		s.ks.Run(loopCtx)
		<-done
	}()
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
