package server

import (
	"context"
	"errors"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/signet-dev/signet/backends"
	"github.com/signet-dev/signet/server/authz"
	"github.com/signet-dev/signet/server/jose"
)

// requestError is a refusal the service itself decides (a ring not named or
// not configured); the packages below have their own error types.
type requestError struct {
	code codes.Code
	msg  string
}

func (e *requestError) Error() string { return e.msg }

// toStatus is the one place where errors become gRPC statuses: the request
// errors of jose and of the service, authz's refusals, and the classified
// backend errors. An error of no known kind is logged (log may be nil only
// where every error has a kind) and answered Internal without its text.
func toStatus(ctx context.Context, log *slog.Logger, err error) *status.Status {
	var (
		in  *jose.InvalidError
		req *requestError
		az  *authz.Error
	)
	switch {
	case errors.As(err, &in):
		return status.New(codes.InvalidArgument, in.Msg)
	case errors.As(err, &req):
		return status.New(req.code, req.msg)
	case errors.As(err, &az):
		return status.New(authzCodes[az.Reason], az.Msg)
	case ctx.Err() != nil:
		return status.FromContextError(ctx.Err())
	}
	kind := backends.KindOf(err)
	msg := err.Error()
	if kind == backends.KindUnavailable && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)) {
		msg = "key backend did not answer in time"
	}
	code, ok := kindCodes[kind]
	if !ok {
		if log != nil {
			log.Error("internal error", "err", err)
		}
		return status.New(codes.Internal, "internal error (details are in the server log)")
	}
	return status.New(code, msg)
}

var authzCodes = map[authz.Reason]codes.Code{
	authz.Unauthenticated: codes.Unauthenticated,
	authz.Denied:          codes.PermissionDenied,
	authz.RateLimited:     codes.ResourceExhausted,
	authz.AuditFailed:     codes.Unavailable,
}

// kindCodes maps backend error kinds to gRPC codes (and, through
// grpc-gateway, to HTTP: Unavailable is 503, InvalidArgument 400, ...).
var kindCodes = map[backends.Kind]codes.Code{
	backends.KindNotFound:           codes.NotFound,
	backends.KindInvalidArgument:    codes.InvalidArgument,
	backends.KindPermissionDenied:   codes.PermissionDenied,
	backends.KindUnavailable:        codes.Unavailable,
	backends.KindFailedPrecondition: codes.FailedPrecondition,
	backends.KindConflict:           codes.Aborted,
	backends.KindUnimplemented:      codes.Unimplemented,
}
