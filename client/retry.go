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

// Retry is how calls retry on Unavailable and ResourceExhausted.
type Retry struct {
	// MaxAttempts counts the first call: 1 never retries. 0 means 4.
	MaxAttempts int
	// InitialBackoff is the wait before the first retry when the server
	// gives no RetryInfo, doubling up to MaxBackoff, each with up to 20%
	// jitter. 0 means 100ms and 5s.
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

// interceptor retries a unary call that failed with Unavailable or
// ResourceExhausted: after the server's RetryInfo delay if it gave one,
// else after an exponential backoff. It gives up, returning the last
// error, when the attempts are used up or the wait would outlast ctx.
// A Rotate without a request_id is never retried (see retryable).
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
			st := status.Convert(err)
			if (st.Code() != codes.Unavailable && st.Code() != codes.ResourceExhausted) || attempt >= r.MaxAttempts {
				return err
			}
			wait := fromStatus(st).RetryDelay
			if wait <= 0 {
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
