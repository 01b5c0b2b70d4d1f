package signetclient

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
)

// ErrorDomain is the domain of Signet's google.rpc.ErrorInfo.
const ErrorDomain = "signet.v1"

// Error is an error a Signet call returned, with what the server said of it
// in machine-readable form. Every error of this package's calls that came
// from the server (or from gRPC) is an *Error: use errors.As, then switch
// on Reason; the gRPC code is there for reasons this client does not know.
type Error struct {
	// Code is the gRPC status code.
	Code codes.Code
	// Reason is the ErrorInfo reason, or ERROR_REASON_UNSPECIFIED if the
	// server sent none or one this client does not know (ReasonName has
	// it then).
	Reason     signetv1.ErrorReason
	ReasonName string
	// Message is the server's human-readable message.
	Message string
	// Field is the request field at fault (from google.rpc.BadRequest),
	// for InvalidArgument; for example "claims_json.iss" or "audience[1]".
	Field string
	// RetryDelay is the server's google.rpc.RetryInfo: when to try again
	// (ResourceExhausted, Unavailable); 0 if it gave none.
	RetryDelay time.Duration

	status *status.Status
}

func (e *Error) Error() string {
	if e.ReasonName != "" {
		return fmt.Sprintf("signet: %s (%s): %s", e.Code, e.ReasonName, e.Message)
	}
	return fmt.Sprintf("signet: %s: %s", e.Code, e.Message)
}

// GRPCStatus makes status.FromError and status.Code work on an *Error.
func (e *Error) GRPCStatus() *status.Status { return e.status }

// ReasonOf is the Reason of err if it is (or wraps) an *Error or a gRPC
// status error from Signet, and ERROR_REASON_UNSPECIFIED otherwise.
func ReasonOf(err error) signetv1.ErrorReason {
	if e, ok := ErrorOf(err); ok {
		return e.Reason
	}
	return signetv1.ErrorReason_ERROR_REASON_UNSPECIFIED
}

// ErrorOf returns err as an *Error: err itself (or what it wraps) if it is
// one, or one built from a gRPC status error, as the generated clients on
// Conn return. ok is false for nil and for errors that are neither.
func ErrorOf(err error) (e *Error, ok bool) {
	if errors.As(err, &e) {
		return e, true
	}
	if st, isStatus := status.FromError(err); isStatus && err != nil {
		return fromStatus(st), true
	}
	return nil, false
}

// asError turns an RPC's error into an *Error (errors that are not gRPC
// statuses, such as a cancelled context's, become one with their code).
func asError(err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	st := status.Convert(err)
	return fromStatus(st)
}

func fromStatus(st *status.Status) *Error {
	e := &Error{Code: st.Code(), Message: st.Message(), status: st}
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			if d.GetDomain() != ErrorDomain {
				continue
			}
			e.ReasonName = d.GetReason()
			e.Reason = signetv1.ErrorReason(signetv1.ErrorReason_value[d.GetReason()])
		case *errdetails.BadRequest:
			if vs := d.GetFieldViolations(); len(vs) > 0 {
				e.Field = vs[0].GetField()
			}
		case *errdetails.RetryInfo:
			if d.GetRetryDelay() != nil {
				e.RetryDelay = d.GetRetryDelay().AsDuration()
			}
		}
	}
	return e
}
