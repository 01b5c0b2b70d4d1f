package signetclient_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"golang.org/x/oauth2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/credentials/local"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"

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
	_, err := (&http.Client{Transport: &signetclient.Transport{Source: ts, AllowInsecure: true}}).Get(srv.URL)
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
	hc := &http.Client{Transport: &signetclient.Transport{Source: ts, AllowInsecure: true}}
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

// TestTransportRefusesPlainHTTP: without AllowInsecure, a request to an
// http:// URL fails before anything is sent or signed.
func TestTransportRefusesPlainHTTP(t *testing.T) {
	s := newTestSignet(t)
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	defer srv.Close()
	ts := newClient(t, s.grpcAddr).TokenSource("default", signetclient.Audience("ledger"))
	resp, err := (&http.Client{Transport: &signetclient.Transport{Source: ts}}).Get(srv.URL)
	if err == nil {
		resp.Body.Close()
		t.Fatal("a bearer token went over plain http without AllowInsecure")
	}
	if !strings.Contains(err.Error(), "plain http") {
		t.Errorf("error %v, want the Transport's refusal of plain http", err)
	}
	if hits.Load() != 0 || s.signs.Load() != 0 {
		t.Errorf("%d requests reached the server and %d Signs, want none", hits.Load(), s.signs.Load())
	}
}

// TestTransportNoTokenOnCrossHostRedirect: a service that redirects the
// client elsewhere does not get the token sent there; a redirect on the
// same host keeps it.
func TestTransportNoTokenOnCrossHostRedirect(t *testing.T) {
	s := newTestSignet(t)
	var mu sync.Mutex
	seen := map[string]string{}
	record := func(name string) http.HandlerFunc {
		return func(_ http.ResponseWriter, r *http.Request) {
			mu.Lock()
			defer mu.Unlock()
			seen[name] = r.Header.Get("Authorization")
		}
	}
	attacker := httptest.NewServer(record("attacker"))
	defer attacker.Close()
	mux := http.NewServeMux()
	mux.Handle("/away", http.RedirectHandler(attacker.URL+"/steal", http.StatusFound))
	mux.Handle("/here", http.RedirectHandler("/landed", http.StatusFound))
	mux.Handle("/landed", record("landed"))
	svc := httptest.NewServer(mux)
	defer svc.Close()

	ts := newClient(t, s.grpcAddr).TokenSource("default", signetclient.Audience("ledger"))
	hc := &http.Client{Transport: &signetclient.Transport{Source: ts, AllowInsecure: true}}
	for _, path := range []string{"/away", "/here"} {
		resp, err := hc.Get(svc.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	mu.Lock()
	defer mu.Unlock()
	if a, ok := seen["attacker"]; !ok || a != "" {
		t.Errorf("the host redirected to got Authorization %q (reached: %v), want none", a, ok)
	}
	if !strings.HasPrefix(seen["landed"], "Bearer ") {
		t.Errorf("a same-host redirect got Authorization %q, want the token", seen["landed"])
	}
}

// TestPerRPCCredentialsRefusesNoSecurity: gRPC's local credentials over TCP
// pass gRPC's dial-time check (they are not "insecure") but carry no
// privacy: without AllowInsecure the call fails (gRPC checks the
// handshake's security level against RequireTransportSecurity) and no
// token is asked for or sent; with it, the token goes.
func TestPerRPCCredentialsRefusesNoSecurity(t *testing.T) {
	s := newTestSignet(t)
	var sawAuth atomic.Bool
	gs := grpc.NewServer(grpc.Creds(local.NewCredentials()), grpc.UnaryInterceptor(
		func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			md, _ := metadata.FromIncomingContext(ctx)
			sawAuth.Store(len(md.Get("authorization")) > 0)
			return h(ctx, req)
		}))
	healthpb.RegisterHealthServer(gs, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()
	ts := newClient(t, s.grpcAddr).TokenSource("default", signetclient.Audience("ledger"))
	for _, allow := range []bool{false, true} {
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(local.NewCredentials()),
			grpc.WithPerRPCCredentials(signetclient.PerRPCCredentials{Source: ts, AllowInsecure: allow}))
		if err != nil {
			t.Fatal(err)
		}
		_, err = healthpb.NewHealthClient(conn).Check(ctxT(t), &healthpb.HealthCheckRequest{})
		conn.Close()
		switch {
		case !allow && (err == nil || sawAuth.Load() || s.signs.Load() != 0):
			t.Errorf("over a NoSecurity connection: error %v, token sent %v, %d Signs; want the call refused, nothing sent or signed", err, sawAuth.Load(), s.signs.Load())
		case allow && (err != nil || !sawAuth.Load()):
			t.Errorf("with AllowInsecure: error %v, token sent %v; want the call to carry it", err, sawAuth.Load())
		}
	}
}
