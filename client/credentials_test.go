package signetclient_test

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"golang.org/x/oauth2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	signetclient "github.com/signet-dev/signet/client"
	signetv1 "github.com/signet-dev/signet/gen/signet/v1"
)

// TestTokenErrorsKeepTheirReason: with Signet refusing (its backend down)
// and no token cached, the Transport's, oauth2's and the gRPC credentials'
// errors are the Sign's *Error, reason and all, through real gRPC.
func TestTokenErrorsKeepTheirReason(t *testing.T) {
	s := newTestSignet(t)
	s.setFail(unavailable())
	c := newClient(t, s.grpcAddr)
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()

	ts := c.TokenSource("default", signetclient.Audience("ledger"))
	_, err := (&http.Client{Transport: &signetclient.Transport{Source: ts}}).Get(srv.URL)
	if signetclient.ReasonOf(err) != signetv1.ErrorReason_BACKEND_UNAVAILABLE {
		t.Errorf("Transport: %v, want BACKEND_UNAVAILABLE", err)
	}
	_, err = oauth2.NewClient(ctxT(t), c.TokenSource("default", signetclient.Audience("ledger"))).Get(srv.URL)
	var e *signetclient.Error
	if !errors.As(err, &e) || e.Reason != signetv1.ErrorReason_BACKEND_UNAVAILABLE {
		t.Errorf("oauth2.NewClient: %v, want an *Error with BACKEND_UNAVAILABLE", err)
	}

	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(signetclient.PerRPCCredentials{Source: c.TokenSource("default", signetclient.Audience("ledger")), AllowInsecure: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = healthpb.NewHealthClient(conn).Check(ctxT(t), &healthpb.HealthCheckRequest{})
	if e, ok := signetclient.ErrorOf(err); !ok || e.Code != codes.Unavailable || e.Reason != signetv1.ErrorReason_BACKEND_UNAVAILABLE {
		t.Errorf("PerRPCCredentials: %v, want Unavailable with BACKEND_UNAVAILABLE", err)
	}
}

// TestTransport: the Transport adds the token without touching the
// caller's request, keeps an Authorization the caller set, and signs once
// for many requests.
func TestTransport(t *testing.T) {
	s := newTestSignet(t)
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.Header.Get("Authorization"))
	}))
	defer srv.Close()
	ts := newClient(t, s.grpcAddr).TokenSource("default", signetclient.Audience("ledger"))
	hc := &http.Client{Transport: &signetclient.Transport{Source: ts}}
	for range 5 {
		req, _ := http.NewRequestWithContext(ctxT(t), http.MethodGet, srv.URL, nil)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if req.Header.Get("Authorization") != "" {
			t.Fatal("the Transport modified the caller's request")
		}
	}
	req, _ := http.NewRequestWithContext(ctxT(t), http.MethodGet, srv.URL, nil)
	req.Header.Set("Authorization", "Bearer mine")
	if resp, err := hc.Do(req); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	tok, err := ts.TokenContext(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 6 || got[0] != "Bearer "+tok.Token || got[4] != got[0] || got[5] != "Bearer mine" {
		t.Errorf("Authorization headers sent: %q", got)
	}
	if n := s.signs.Load(); n != 1 {
		t.Errorf("%d Signs for 5 requests, want 1", n)
	}
}
