package server

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/signet-dev/signet/server/authz"
	"github.com/signet-dev/signet/server/telemetry"
)

// recoverUnary turns a panic into Internal and logs its stack. It is the
// outermost interceptor, so a panic in any other is caught too.
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
			if id := telemetry.TraceID(ctx); id != "" {
				attrs = append(attrs, "trace_id", id)
			}
			if err != nil {
				attrs = append(attrs, "err", status.Convert(err).Message())
			}
			log.Log(ctx, level, "rpc", attrs...)
		}
		return resp, err
	}
}

type callerKey struct{}

// callerOf returns the identity authenticate established for the call.
func callerOf(ctx context.Context) string {
	if id, ok := ctx.Value(callerKey{}).(string); ok {
		return id
	}
	return authz.DevelopmentCaller
}

type clientCertKey struct{}

// clientCertOf returns the verified client certificate of the call, nil in
// plaintext development mode. Only authenticateTap sets it, from the TLS
// peer: never anything the request says.
func clientCertOf(ctx context.Context) *x509.Certificate {
	c, _ := ctx.Value(clientCertKey{}).(*x509.Certificate)
	return c
}

func peerOf(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// requireCaller refuses a SignerService call that reaches the handlers
// without the identity authenticateTap establishes for every one with mTLS
// on. It cannot happen while the tap is installed; should the wiring ever
// change, the call fails closed instead of running as nobody.
func requireCaller(a *authz.Authorizer) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if a.MTLS() && needsCaller(info.FullMethod) {
			if _, ok := ctx.Value(callerKey{}).(string); !ok {
				return nil, status.Error(codes.Unauthenticated, "no caller identity was established for this call")
			}
		}
		// Development mode: every caller is authz.DevelopmentCaller,
		// which callerOf answers without a context value.
		return handler(ctx, req)
	}
}

var denialReasons = map[authz.Reason]string{
	authz.Unauthenticated: "unauthenticated", authz.Denied: "not_granted", authz.RateLimited: "rate_limited",
}

// countDenial counts err if it is a refusal by authz.
func countDenial(m *telemetry.Metrics, err error) {
	var e *authz.Error
	if errors.As(err, &e) {
		if reason, ok := denialReasons[e.Reason]; ok {
			m.Denied(reason, e.Grant)
		}
	}
}
