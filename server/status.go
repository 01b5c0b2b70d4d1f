package server

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/signet-dev/signet/backends"
	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
	"github.com/signet-dev/signet/server/authz"
	"github.com/signet-dev/signet/server/jose"
	"github.com/signet-dev/signet/server/lifecycle"
)

// ErrorDomain is the domain of every ErrorInfo Signet sends.
const ErrorDomain = "signet.v1"

// unavailableRetryDelay is the RetryInfo of an Unavailable that has no
// better estimate (a backend that did not answer, an unwritable audit log):
// soon enough for a blip, late enough not to hammer a struggling backend.
const unavailableRetryDelay = time.Second

// requestError is a refusal the service itself decides (a ring not named or
// not configured, a page token that is not ours); the packages below have
// their own error types.
type requestError struct {
	code   codes.Code
	reason signetv1.ErrorReason
	field  string // for InvalidArgument: the request field at fault
	msg    string
}

func (e *requestError) Error() string { return e.msg }

// toStatus is the one place where errors become gRPC statuses: the request
// errors of jose and of the service, authz's refusals, and the classified
// backend errors. Each status carries an ErrorInfo with a stable reason
// (signet.v1.ErrorReason), InvalidArgument a BadRequest naming the field,
// ResourceExhausted and Unavailable a RetryInfo. An error of no known kind
// is logged (log may be nil only where every error has a kind) and
// answered Internal without its text.
func toStatus(ctx context.Context, log *slog.Logger, err error) *status.Status {
	var (
		in  *jose.InvalidError
		req *requestError
		az  *authz.Error
	)
	switch {
	case errors.As(err, &in):
		return withDetails(codes.InvalidArgument, invalidReasons[in.Problem], in.Msg, in.Field, 0)
	case errors.As(err, &req):
		return withDetails(req.code, req.reason, req.msg, req.field, 0)
	case errors.As(err, &az):
		reason := authzReasons[az.Reason]
		if az.Reason == authz.Denied {
			reason = ruleReasons[az.Rule]
		}
		retry := az.RetryAfter
		if az.Reason == authz.AuditFailed {
			retry = unavailableRetryDelay
		}
		return withDetails(authzCodes[az.Reason], reason, az.Msg, "", retry)
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
		return withDetails(codes.Internal, signetv1.ErrorReason_INTERNAL, "internal error (details are in the server log)", "", 0)
	}
	reason := kindReasons[kind]
	switch {
	case errors.Is(err, lifecycle.ErrNoSigningVersion):
		reason = signetv1.ErrorReason_NO_SIGNING_KEY
	case errors.Is(err, lifecycle.ErrCARing):
		reason = signetv1.ErrorReason_KEY_RING_IS_CA
	}
	var retry time.Duration
	if code == codes.Unavailable && !errors.Is(err, lifecycle.ErrAllRevoked) {
		// Not when every version is revoked: no retry succeeds until
		// someone rotates, so the client should not wait and try again.
		retry = unavailableRetryDelay
	}
	return withDetails(code, reason, msg, "", retry)
}

// withDetails is a status with an ErrorInfo, and the BadRequest field
// violation (InvalidArgument with a field) and RetryInfo (retry > 0) that
// apply.
func withDetails(code codes.Code, reason signetv1.ErrorReason, msg, field string, retry time.Duration) *status.Status {
	st := status.New(code, msg)
	details := []protoadapt.MessageV1{&errdetails.ErrorInfo{Reason: reason.String(), Domain: ErrorDomain}}
	if code == codes.InvalidArgument && field != "" {
		details = append(details, &errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
			{Field: field, Description: msg, Reason: reason.String()}}})
	}
	if retry > 0 {
		details = append(details, &errdetails.RetryInfo{RetryDelay: durationpb.New(retry)})
	}
	if d, err := st.WithDetails(details...); err == nil {
		return d
	}
	return st // only a detail that cannot be marshalled fails, and these can
}

var invalidReasons = map[jose.Problem]signetv1.ErrorReason{
	jose.FieldInvalid:   signetv1.ErrorReason_FIELD_INVALID,
	jose.ReservedClaim:  signetv1.ErrorReason_RESERVED_CLAIM,
	jose.ClaimsInvalid:  signetv1.ErrorReason_CLAIMS_INVALID,
	jose.ClaimsTooLarge: signetv1.ErrorReason_CLAIMS_TOO_LARGE,
	jose.TTLOutOfRange:  signetv1.ErrorReason_TTL_OUT_OF_RANGE,
}

var authzCodes = map[authz.Reason]codes.Code{
	authz.Unauthenticated: codes.Unauthenticated,
	authz.Denied:          codes.PermissionDenied,
	authz.RateLimited:     codes.ResourceExhausted,
	authz.AuditFailed:     codes.Unavailable,
	authz.Unbindable:      codes.FailedPrecondition,
}

var authzReasons = map[authz.Reason]signetv1.ErrorReason{
	authz.Unauthenticated: signetv1.ErrorReason_UNAUTHENTICATED,
	authz.RateLimited:     signetv1.ErrorReason_RATE_LIMITED,
	authz.AuditFailed:     signetv1.ErrorReason_AUDIT_UNAVAILABLE,
	authz.Unbindable:      signetv1.ErrorReason_CERTIFICATE_BINDING_UNAVAILABLE,
}

var ruleReasons = map[authz.Rule]signetv1.ErrorReason{
	authz.NoGrant:      signetv1.ErrorReason_NO_GRANT,
	authz.AudienceRule: signetv1.ErrorReason_AUDIENCE_NOT_ALLOWED,
	authz.SubjectRule:  signetv1.ErrorReason_SUBJECT_NOT_ALLOWED,
	authz.ClaimRule:    signetv1.ErrorReason_CLAIM_NOT_ALLOWED,
	authz.TypRule:      signetv1.ErrorReason_TYP_NOT_ALLOWED,
	authz.TTLRule:      signetv1.ErrorReason_TTL_NOT_ALLOWED,
	authz.BindRule:     signetv1.ErrorReason_BINDING_NOT_ALLOWED,
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

var kindReasons = map[backends.Kind]signetv1.ErrorReason{
	backends.KindNotFound:           signetv1.ErrorReason_BACKEND_NOT_FOUND,
	backends.KindInvalidArgument:    signetv1.ErrorReason_BACKEND_INVALID_ARGUMENT,
	backends.KindPermissionDenied:   signetv1.ErrorReason_BACKEND_PERMISSION_DENIED,
	backends.KindUnavailable:        signetv1.ErrorReason_BACKEND_UNAVAILABLE,
	backends.KindFailedPrecondition: signetv1.ErrorReason_BACKEND_FAILED_PRECONDITION,
	backends.KindConflict:           signetv1.ErrorReason_ROTATION_CONFLICT,
	backends.KindUnimplemented:      signetv1.ErrorReason_BACKEND_UNIMPLEMENTED,
}
