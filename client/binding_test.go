package signetclient_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	signetclient "github.com/signet-dev/signet/client"
)

// tlsPair is a key pair and certificate from ca (self-signed if ca is
// nil), for 127.0.0.1, usable as TLS server and client.
func tlsPair(t *testing.T, ca *tls.Certificate, isCA bool) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: "binding test"}, IsCA: isCA, BasicConstraintsValid: true,
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	parent, parentKey := tmpl, any(key)
	if ca != nil {
		parent, parentKey = ca.Leaf, ca.PrivateKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// boundToken is a token of s for audience ledger whose cnf binds it to cert.
func boundToken(t *testing.T, s *testSignet, cnf any) string {
	t.Helper()
	now := time.Now()
	claims := map[string]any{"iss": exampleIssuer, "aud": "ledger", "sub": "payments", "iat": now.Unix(), "nbf": now.Unix(),
		"exp": now.Add(time.Minute).Unix(), "jti": "bound"}
	if cnf != nil {
		claims["cnf"] = cnf
	}
	tok, err := s.signJWT(map[string]any{"alg": "ES256", "kid": s.kid, "typ": "JWT"}, claims)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func x5t(c tls.Certificate) string {
	sum := sha256.Sum256(c.Certificate[0])
	return b64(sum[:])
}

// A token bound to certificate A (RFC 8705 cnf x5t#S256) passes the
// middleware and the interceptors only from a caller presenting A over
// mutual TLS: B, no certificate, or no TLS at all are refused, and so is
// a cnf this verifier cannot confirm. An unbound token passes unless
// RequireBinding; Verify without a certificate refuses a bound token.
func TestBoundTokens(t *testing.T) {
	s := newTestSignet(t)
	ca := tlsPair(t, nil, true)
	server, certA, certB := tlsPair(t, &ca, false), tlsPair(t, &ca, false), tlsPair(t, &ca, false)
	bound := boundToken(t, s, map[string]any{"x5t#S256": x5t(certA)})
	unbound := boundToken(t, s, nil)
	foreign := boundToken(t, s, map[string]any{"x5t#S256": x5t(certA), "jkt": "some-key"})
	roots := x509.NewCertPool()
	roots.AddCert(ca.Leaf)
	serverTLS := &tls.Config{Certificates: []tls.Certificate{server}, ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS13}

	var mu sync.Mutex
	var refusals []error // what OnError was told, written by the servers' goroutines
	v, err := signetclient.NewVerifier(ctxT(t), signetclient.VerifierConfig{JWKSURL: s.jwksURL, Issuer: exampleIssuer, Audience: "ledger",
		OnError: func(_ context.Context, err error) { mu.Lock(); refusals = append(refusals, err); mu.Unlock() }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	strict, err := signetclient.NewVerifier(ctxT(t), signetclient.VerifierConfig{JWKSURL: s.jwksURL, Issuer: exampleIssuer, Audience: "ledger",
		RequireBinding: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(strict.Close)

	if _, err := v.Verify(ctxT(t), bound); !errors.Is(err, signetclient.ErrCertificateMismatch) {
		t.Errorf("Verify of a bound token without a certificate: %v, want ErrCertificateMismatch", err)
	}
	if c, err := v.VerifyPresented(ctxT(t), bound, certA.Leaf); err != nil || c.CertificateThumbprint != x5t(certA) {
		t.Errorf("VerifyPresented with A: %+v %v", c, err)
	}

	handler := func(v *signetclient.Verifier) http.Handler {
		return v.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if c, ok := signetclient.ClaimsFromContext(r.Context()); !ok || c.Subject != "payments" {
				t.Errorf("claims in the context: %+v", c)
			}
		}))
	}
	web := httptest.NewUnstartedServer(handler(v))
	web.TLS = serverTLS
	web.StartTLS()
	defer web.Close()
	strictWeb := httptest.NewUnstartedServer(handler(strict))
	strictWeb.TLS = serverTLS
	strictWeb.StartTLS()
	defer strictWeb.Close()
	plainWeb := httptest.NewServer(handler(v))
	defer plainWeb.Close()

	get := func(url, token string, cert *tls.Certificate) int {
		t.Helper()
		conf := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13}
		if cert != nil {
			conf.Certificates = []tls.Certificate{*cert}
		}
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: conf}}
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, c := range []struct {
		name, url, token string
		cert             *tls.Certificate
		want             int
	}{
		{"bound to A, presented with A", web.URL, bound, &certA, http.StatusOK},
		{"bound to A, presented with B", web.URL, bound, &certB, http.StatusUnauthorized},
		{"bound to A, no certificate", web.URL, bound, nil, http.StatusUnauthorized},
		{"bound to A, no TLS", plainWeb.URL, bound, nil, http.StatusUnauthorized},
		{"cnf with a member Signet never writes", web.URL, foreign, &certA, http.StatusUnauthorized},
		{"unbound, with B", web.URL, unbound, &certB, http.StatusOK},
		{"unbound, no TLS", plainWeb.URL, unbound, nil, http.StatusOK},
		{"unbound, RequireBinding", strictWeb.URL, unbound, &certA, http.StatusUnauthorized},
		{"bound to A, RequireBinding, with A", strictWeb.URL, bound, &certA, http.StatusOK},
	} {
		mu.Lock()
		refusals = nil
		mu.Unlock()
		if got := get(c.url, c.token, c.cert); got != c.want {
			t.Errorf("HTTP, %s: %d, want %d", c.name, got, c.want)
		}
		mu.Lock()
		if c.want == http.StatusUnauthorized && c.url != strictWeb.URL &&
			(len(refusals) != 1 || !errors.Is(refusals[0], signetclient.ErrCertificateMismatch)) {
			t.Errorf("HTTP, %s: OnError saw %v, want ErrCertificateMismatch", c.name, refusals)
		}
		mu.Unlock()
	}

	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(serverTLS)), grpc.ChainUnaryInterceptor(v.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(v.StreamServerInterceptor()))
	healthpb.RegisterHealthServer(gs, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()
	call := func(token string, cert *tls.Certificate) (unary, stream codes.Code) {
		t.Helper()
		conf := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13}
		if cert != nil {
			conf.Certificates = []tls.Certificate{*cert}
		}
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(conf)))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx := metadata.AppendToOutgoingContext(ctxT(t), "authorization", "Bearer "+token)
		hc := healthpb.NewHealthClient(conn)
		_, err = hc.Check(ctx, &healthpb.HealthCheckRequest{})
		w, serr := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
		if serr == nil {
			_, serr = w.Recv()
		}
		return status.Code(err), status.Code(serr)
	}
	for _, c := range []struct {
		name  string
		token string
		cert  *tls.Certificate
		want  codes.Code
	}{
		{"bound to A, presented with A", bound, &certA, codes.OK},
		{"bound to A, presented with B", bound, &certB, codes.Unauthenticated},
		{"bound to A, no certificate", bound, nil, codes.Unauthenticated},
		{"unbound, with B", unbound, &certB, codes.OK},
	} {
		if u, st := call(c.token, c.cert); u != c.want || st != c.want {
			t.Errorf("gRPC, %s: unary %v, stream %v, want %v", c.name, u, st, c.want)
		}
	}
}
