package backends

import (
	"context"
	"errors"
	"fmt"
)

// Kind classifies a backend error. The server maps each kind to one gRPC code.
type Kind int

const (
	KindUnknown            Kind = iota
	KindNotFound                // the ring or version does not exist
	KindInvalidArgument         // the request can never succeed as made
	KindPermissionDenied        // the backend refused Signet's credentials
	KindUnavailable             // the backend cannot be reached or did not answer in time
	KindFailedPrecondition      // e.g. signing with a disabled version
	KindConflict                // CreateVersion lost a race with another writer
	KindUnimplemented           // the backend does not support the operation or algorithm
)

var kindNames = [...]string{"unknown", "not found", "invalid argument", "permission denied",
	"unavailable", "failed precondition", "conflict", "unimplemented"}

func (k Kind) String() string {
	if k < 0 || int(k) >= len(kindNames) {
		return fmt.Sprintf("kind(%d)", int(k))
	}
	return kindNames[k]
}

// Error is a classified backend error. Its message never holds a secret.
type Error struct {
	Kind Kind
	// Backend is the scheme of the backend that failed, e.g. "vault".
	Backend string
	// Msg is the whole message; Err, when set, is the cause it already
	// describes, kept for errors.Is and errors.As.
	Msg string
	Err error
}

func (e *Error) Error() string {
	s := e.Msg
	if s == "" && e.Err != nil {
		s = e.Err.Error()
	}
	if e.Backend != "" {
		s = e.Backend + ": " + s
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrNotFound) and friends work on any *Error.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Msg == "" && t.Err == nil && t.Kind == e.Kind
}

// Sentinels for errors.Is.
var (
	ErrNotFound           = &Error{Kind: KindNotFound}
	ErrInvalidArgument    = &Error{Kind: KindInvalidArgument}
	ErrPermissionDenied   = &Error{Kind: KindPermissionDenied}
	ErrUnavailable        = &Error{Kind: KindUnavailable}
	ErrFailedPrecondition = &Error{Kind: KindFailedPrecondition}
	ErrConflict           = &Error{Kind: KindConflict}
	ErrUnimplemented      = &Error{Kind: KindUnimplemented}
)

// Errorf returns a classified error. Each %w verb wraps its operand:
// errors.Is and errors.As find every one of them, not only the first.
func Errorf(kind Kind, backend, format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &Error{Kind: kind, Backend: backend, Msg: err.Error(), Err: causes(err)}
}

// causes returns what fmt.Errorf wrapped: the operand of a single %w, all
// the operands of several (errors.Unwrap sees none of those: fmt returns
// them from Unwrap() []error), or nil.
func causes(err error) error {
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		return u.Unwrap()
	case interface{ Unwrap() []error }:
		return errors.Join(u.Unwrap()...)
	}
	return nil
}

// KindOf classifies err. A context deadline or cancellation counts as
// unavailable: the backend did not answer in time.
func KindOf(err error) Kind {
	var e *Error
	switch {
	case err == nil:
		return KindUnknown
	case errors.As(err, &e):
		return e.Kind
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return KindUnavailable
	}
	return KindUnknown
}
