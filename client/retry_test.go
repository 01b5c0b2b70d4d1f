package signetclient

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
)

// TestRetryWithoutRetryInfo: a Signet that cannot be reached (a closed
// port on loopback: Unavailable, with no RetryInfo) is retried with backoff
// up to MaxAttempts, and not at all when the backoff would outlast the
// caller's deadline; the error is an *Error with the code.
func TestRetryWithoutRetryInfo(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // nothing listens there now
	var attempts atomic.Int32
	count := grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn,
		invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		attempts.Add(1)
		return invoker(ctx, method, req, reply, cc, opts...)
	})
	c, err := New(Config{Target: addr, Plaintext: true, DialOptions: []grpc.DialOption{count},
		Retry: Retry{MaxAttempts: 3, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err = c.Sign(ctx, "default", Audience("x"))
	var e *Error
	if !errors.As(err, &e) || e.Code != codes.Unavailable {
		t.Fatalf("Sign against a closed port: %v, want an *Error with Unavailable", err)
	}
	if got := attempts.Load(); got != 3 {
		t.Errorf("%d attempts, want MaxAttempts (3)", got)
	}

	slow, err := New(Config{Target: addr, Plaintext: true, DialOptions: []grpc.DialOption{count},
		Retry: Retry{MaxAttempts: 3, InitialBackoff: time.Hour}})
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	attempts.Store(0)
	short, cancel2 := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel2()
	if _, err := slow.Sign(short, "default", Audience("x")); ReasonOf(err) != 0 || err == nil {
		t.Fatalf("Sign: %v", err)
	}
	if got := attempts.Load(); got != 1 {
		t.Errorf("%d attempts with a backoff longer than the deadline, want 1", got)
	}
}

// TestRetryRotateOnlyWithRequestID: a Rotate sent through the generated
// client on Conn() without a request_id is never retried (an Unavailable
// Rotate may have created its version: a retry would create another),
// while one with a request_id, and the Client's own Rotate, which always
// sets one, are.
func TestRetryRotateOnlyWithRequestID(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // nothing listens there: every call is Unavailable
	var attempts atomic.Int32
	count := grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn,
		invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		attempts.Add(1)
		return invoker(ctx, method, req, reply, cc, opts...)
	})
	c, err := New(Config{Target: addr, Plaintext: true, DialOptions: []grpc.DialOption{count},
		Retry: Retry{MaxAttempts: 3, InitialBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	gen := signetv1.NewSignerServiceClient(c.Conn())
	for _, tc := range []struct {
		name string
		call func() error
		want int32
	}{
		{"generated Rotate without request_id", func() error {
			_, err := gen.Rotate(ctx, &signetv1.RotateRequest{KeyRing: "default"})
			return err
		}, 1},
		{"generated Rotate with request_id", func() error {
			_, err := gen.Rotate(ctx, &signetv1.RotateRequest{KeyRing: "default", RequestId: NewRequestID()})
			return err
		}, 3},
		{"Client.Rotate", func() error { _, err := c.Rotate(ctx, "default"); return err }, 3},
		{"generated ListKeys", func() error {
			_, err := gen.ListKeys(ctx, &signetv1.ListKeysRequest{KeyRing: "default"})
			return err
		}, 3},
	} {
		attempts.Store(0)
		if e, ok := ErrorOf(tc.call()); !ok || e.Code != codes.Unavailable {
			t.Fatalf("%s against a closed port: %v, want Unavailable", tc.name, e)
		}
		if got := attempts.Load(); got != tc.want {
			t.Errorf("%s: %d attempts, want %d", tc.name, got, tc.want)
		}
	}
}
