package signetclient

import (
	"context"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
)

// Retry is how calls retry on Unavailable, and on ResourceExhausted that
// is Signet's rate limit (RATE_LIMITED) or carries a RetryInfo.
type Retry struct {
	// MaxAttempts counts the first call: 1 never retries. 0 means 4.
	MaxAttempts int
	// InitialBackoff is the wait before the first retry when the server
	// gives no RetryInfo, doubling up to MaxBackoff, each with up to 20%
	// jitter. 0 means 100ms and 5s. A RetryInfo delay longer than
	// MaxBackoff is not waited for: the call returns its error at once.
	InitialBackoff, MaxBackoff time.Duration
}

func (r Retry) withDefaults() Retry {
	if r.MaxAttempts <= 0 {
		r.MaxAttempts = 4
	}
	if r.InitialBackoff <= 0 {
		r.InitialBackoff = 100 * time.Millisecond
	}
	if r.MaxBackoff <= 0 {
		r.MaxBackoff = 5 * time.Second
	}
	return r
}

// interceptor retries a unary call that failed with Unavailable, or with
// ResourceExhausted from Signet's rate limit (RATE_LIMITED or a RetryInfo;
// not, say, gRPC's own message-size errors, which a retry repeats): after
// the server's RetryInfo delay plus up to 10% jitter if it gave one, else
// after an exponential backoff. It gives up, returning the last error, when
// the attempts are used up, the RetryInfo delay exceeds MaxBackoff, or the
// wait would outlast ctx. A Rotate without a request_id is never retried
// (see retryable).
func (r Retry) interceptor() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		if !retryable(method, req) {
			return invoker(ctx, method, req, reply, cc, opts...)
		}
		backoff := r.InitialBackoff
		for attempt := 1; ; attempt++ {
			err := invoker(ctx, method, req, reply, cc, opts...)
			if err == nil {
				return nil
			}
			e := fromStatus(status.Convert(err))
			if !retriedOn(e) || attempt >= r.MaxAttempts {
				return err
			}
			wait := e.RetryDelay
			switch {
			case wait > r.MaxBackoff:
				return err // the server asks for longer than the caller will wait (a grant of rate 0, say)
			case wait > 0:
				wait += time.Duration(rand.Int64N(int64(wait)/10 + 1)) // #nosec G404 -- jitter, not a secret
			default:
				wait = backoff + time.Duration(rand.Int64N(int64(backoff)/5+1)) // #nosec G404 -- jitter, not a secret
				backoff = min(2*backoff, r.MaxBackoff)
			}
			if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) <= wait {
				return err // the retry could not finish in time: the caller gets the real reason now
			}
			t := time.NewTimer(wait)
			select {
			case <-ctx.Done():
				t.Stop()
				return err
			case <-t.C:
			}
		}
	}
}

// retryable says whether a call may be sent again. Every call is, but a
// Rotate without a request_id: an Unavailable Rotate may have created its
// version (say "created vN but revoking failed"), and only the request_id
// lets the server recognise the retry instead of creating another version.
// This matters for the generated SignerServiceClient on Conn(); the
// Client's own Rotate always sets an id.
func retryable(method string, req any) bool {
	if method != signetv1.SignerService_Rotate_FullMethodName {
		return true
	}
	r, ok := req.(*signetv1.RotateRequest)
	return ok && r.GetRequestId() != ""
}

// retriedOn says whether an error is worth retrying: Unavailable, and
// ResourceExhausted when it is Signet's rate limit (RATE_LIMITED, or any
// RetryInfo). gRPC answers a message over its size limits
// ResourceExhausted too, and that fails again however long one waits.
func retriedOn(e *Error) bool {
	switch e.Code {
	case codes.Unavailable:
		return true
	case codes.ResourceExhausted:
		return e.Reason == signetv1.ErrorReason_RATE_LIMITED || e.RetryDelay > 0
	}
	return false
}
