package signetclient_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	signetclient "github.com/signet-dev/signet/client"
)

// TestNoRetryOnMessageTooLarge: a Sign larger than the server's gRPC
// message limit is ResourceExhausted from gRPC, not Signet's rate limit
// (no RATE_LIMITED, no RetryInfo): it would fail again, so it is not
// retried.
func TestNoRetryOnMessageTooLarge(t *testing.T) {
	var attempts atomic.Int32
	count := grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn,
		invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		attempts.Add(1)
		return invoker(ctx, method, req, reply, cc, opts...)
	})
	c, err := signetclient.New(signetclient.Config{Target: exampleSignet, Plaintext: true, DialOptions: []grpc.DialOption{count},
		Retry: signetclient.Retry{MaxAttempts: 3, InitialBackoff: 10 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	huge := `{"blob": "` + strings.Repeat("x", 5<<20) + `"}` // past gRPC's default 4 MiB
	_, err = c.Sign(ctx, "default", signetclient.Audience("x"), signetclient.ClaimsJSON(huge))
	if e, ok := signetclient.ErrorOf(err); !ok || e.Code != codes.ResourceExhausted || e.RetryDelay != 0 {
		t.Fatalf("an oversized Sign: %v, want ResourceExhausted without RetryInfo", err)
	}
	if got := attempts.Load(); got != 1 {
		t.Errorf("%d attempts of an oversized Sign, want 1", got)
	}
}
