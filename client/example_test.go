package signetclient_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	signetclient "github.com/signet-dev/signet/client"
	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
)

// The examples run against the Signet on loopback that the package's tests
// start (exampleSignet, exampleJWKS); a real service sets CertFile, KeyFile
// and CAFile instead of Plaintext.

// A service asks Signet for a token with an exact 64-bit claim, and another
// verifies it against Signet's JWKS.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	c, err := signetclient.New(signetclient.Config{Target: exampleSignet, Plaintext: true})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	tok, err := c.Sign(ctx, "default",
		signetclient.Audience("ledger"),
		signetclient.Subject("spiffe://corp.example/payments"),
		signetclient.TTL(5*time.Minute),
		signetclient.ClaimsJSON(`{"account": 9007199254740993}`))
	if err != nil {
		log.Fatal(err)
	}

	v, err := signetclient.NewVerifier(ctx, signetclient.VerifierConfig{
		JWKSURL: exampleJWKS, Issuer: exampleIssuer, Audience: "ledger"})
	if err != nil {
		log.Fatal(err)
	}
	defer v.Close()
	claims, err := v.Verify(ctx, tok.Token)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(claims.Subject, claims.All["account"])

	// Refusals are typed: the reason says what to do.
	_, err = c.Sign(ctx, "default", signetclient.Audience("ledger"), signetclient.ClaimsJSON(`{"exp": 1}`))
	var serr *signetclient.Error
	if errors.As(err, &serr) && serr.Reason == signetv1.ErrorReason_RESERVED_CLAIM {
		fmt.Println("refused:", serr.Field)
	}
	// Output:
	// spiffe://corp.example/payments 9007199254740993
	// refused: claims_json.exp
}

// An HTTP client whose every request carries a token, signed once per half
// lifetime however many requests it makes, calls a service that verifies
// it with the Verifier's middleware.
func ExampleClient_TokenSource() {
	ctx := context.Background()
	c, err := signetclient.New(signetclient.Config{Target: exampleSignet, Plaintext: true})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ts := c.TokenSource("default", signetclient.Audience("ledger"), signetclient.Subject("payments"), signetclient.TTL(10*time.Minute))
	httpClient := oauth2.NewClient(ctx, ts) // or signetclient.Transport, over https (ExampleTransport)

	// The ledger service.
	v, err := signetclient.NewVerifier(ctx, signetclient.VerifierConfig{JWKSURL: exampleJWKS, Issuer: exampleIssuer, Audience: "ledger"})
	if err != nil {
		log.Fatal(err)
	}
	defer v.Close()
	ledger := httptest.NewServer(v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		claims, _ := signetclient.ClaimsFromContext(r.Context())
		fmt.Fprintf(w, "hello %s", claims.Subject)
	})))
	defer ledger.Close()

	for range 2 {
		resp, err := httpClient.Get(ledger.URL)
		if err != nil {
			log.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(resp.StatusCode, string(body))
	}
	resp, err := http.Get(ledger.URL) // no token
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	fmt.Println(resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	// Output:
	// 200 hello payments
	// 200 hello payments
	// 401 Bearer
}

// A gRPC client sends a token with every call (PerRPCCredentials), and a
// gRPC service verifies it (the Verifier's interceptors) and reads its
// claims from the context.
func ExampleVerifier_UnaryServerInterceptor() {
	ctx := context.Background()
	v, err := signetclient.NewVerifier(ctx, signetclient.VerifierConfig{JWKSURL: exampleJWKS, Issuer: exampleIssuer, Audience: "ledger"})
	if err != nil {
		log.Fatal(err)
	}
	defer v.Close()
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(v.UnaryServerInterceptor(),
			func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
				claims, _ := signetclient.ClaimsFromContext(ctx)
				fmt.Println(info.FullMethod, "called by", claims.Subject)
				return h(ctx, req)
			}),
		grpc.ChainStreamInterceptor(v.StreamServerInterceptor()))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go func() { _ = srv.Serve(lis) }()
	defer srv.Stop()

	c, err := signetclient.New(signetclient.Config{Target: exampleSignet, Plaintext: true})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	creds := signetclient.PerRPCCredentials{
		Source:        c.TokenSource("default", signetclient.Audience("ledger"), signetclient.Subject("payments")),
		AllowInsecure: true, // loopback in this example; with TLS, leave it false
	}
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(creds))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(resp.GetStatus())
	// Output:
	// /grpc.health.v1.Health/Check called by payments
	// SERVING
}

// The Transport puts a token on each request without x/oauth2, over https
// only, and not on a redirect to another host.
func ExampleTransport() {
	ctx := context.Background()
	c, err := signetclient.New(signetclient.Config{Target: exampleSignet, Plaintext: true})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	v, err := signetclient.NewVerifier(ctx, signetclient.VerifierConfig{JWKSURL: exampleJWKS, Issuer: exampleIssuer, Audience: "ledger"})
	if err != nil {
		log.Fatal(err)
	}
	defer v.Close()
	ledger := httptest.NewTLSServer(v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		claims, _ := signetclient.ClaimsFromContext(r.Context())
		fmt.Fprintf(w, "hello %s", claims.Subject)
	})))
	defer ledger.Close()

	httpClient := &http.Client{Transport: &signetclient.Transport{
		Source: c.TokenSource("default", signetclient.Audience("ledger"), signetclient.Subject("payments")),
		Base:   ledger.Client().Transport, // trusts the test server's certificate
	}}
	resp, err := httpClient.Get(ledger.URL)
	if err != nil {
		log.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(resp.StatusCode, string(body))

	_, err = httpClient.Get(strings.Replace(ledger.URL, "https:", "http:", 1))
	fmt.Println(err != nil)
	// Output:
	// 200 hello payments
	// true
}
